/** Tag → digest answers kept for a while, bounded, with identical concurrent lookups sharing one flight. */
import type { Digest } from '../../shared/digest.ts';

export interface TagCacheInit {
  /** How long an answer is reused. Default 60 s (--cache-ttl). */
  ttlMs?: number;
  /** Entries kept at most; the least recently used go first. Default 10 000. */
  maxEntries?: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
}

export class TagCache {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, { digest: Digest; expires: number }>();
  readonly #flights = new Map<string, Promise<unknown>>();

  constructor(init: TagCacheInit = {}) {
    this.#ttlMs = init.ttlMs ?? 60_000;
    this.#maxEntries = init.maxEntries ?? 10_000;
    this.#now = init.now ?? Date.now;
  }

  get(key: string): Digest | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    // Map order is the LRU order: a hit moves to the end.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.digest;
  }

  set(key: string, digest: Digest): void {
    this.#entries.delete(key);
    this.#entries.set(key, { digest, expires: this.#now() + this.#ttlMs });
    while (this.#entries.size > this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Runs `work` unless the same flight is already under way, whose result is shared. */
  once<T>(flight: string, work: () => Promise<T>): Promise<T> {
    const running = this.#flights.get(flight) as Promise<T> | undefined;
    if (running !== undefined) return running;
    const promise = work().finally(() => this.#flights.delete(flight));
    this.#flights.set(flight, promise);
    return promise;
  }
}
