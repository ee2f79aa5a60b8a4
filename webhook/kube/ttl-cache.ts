/**
 * A small bounded cache whose entries expire, and whose loads are shared: a burst
 * of callers asking for one key while it loads makes one call. A load that
 * rejects is not kept (the next caller tries again); one that resolves is kept
 * for `ttlMs` from when it resolved.
 */
export interface TtlCacheInit {
  /** How long a loaded value is reused. */
  ttlMs: number;
  /** Most entries kept; the oldest goes first. */
  maxEntries: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
}

interface Entry<V> {
  readonly value: Promise<V>;
  /** Infinity while loading. */
  expires: number;
}

export class TtlCache<V> {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry<V>>();

  constructor(init: TtlCacheInit) {
    this.#ttlMs = init.ttlMs;
    this.#maxEntries = init.maxEntries;
    this.#now = init.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The cached value for key, or load()'s, shared with every caller until it expires. */
  get(key: string, load: () => Promise<V>): Promise<V> {
    const hit = this.#entries.get(key);
    if (hit && hit.expires > this.#now()) return hit.value;
    this.#entries.delete(key);
    while (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done) break;
      this.#entries.delete(oldest.value);
    }
    const entry: Entry<V> = { value: load(), expires: Number.POSITIVE_INFINITY };
    this.#entries.set(key, entry);
    entry.value.then(
      () => {
        entry.expires = this.#now() + this.#ttlMs;
      },
      () => {
        if (this.#entries.get(key) === entry) this.#entries.delete(key);
      },
    );
    return entry.value;
  }

  clear(): void {
    this.#entries.clear();
  }
}
