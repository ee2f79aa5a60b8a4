/**
 * Peers caught sending bytes that do not match their digest, skipped until
 * their sentence runs out. Keyed by peer id, not address: a pod that comes
 * back on another IP with the same broken store stays skipped.
 */

export interface QuarantineInit {
  /** How long a peer is skipped after it sent wrong bytes. */
  durationMs: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
}

export class Quarantine {
  readonly #durationMs: number;
  readonly #now: () => number;
  /** peerId → time its quarantine ends. */
  readonly #until = new Map<string, number>();

  constructor(init: QuarantineInit) {
    this.#durationMs = init.durationMs;
    this.#now = init.now ?? Date.now;
  }

  /** Skips `peerId` from now until the duration has passed (again, if it already was). */
  add(peerId: string): void {
    const now = this.#now();
    // Expired entries go here, so the map holds at most the peers caught within one duration.
    for (const [id, until] of this.#until) if (until <= now) this.#until.delete(id);
    this.#until.set(peerId, now + this.#durationMs);
  }

  has(peerId: string): boolean {
    const until = this.#until.get(peerId);
    if (until === undefined) return false;
    if (until > this.#now()) return true;
    this.#until.delete(peerId);
    return false;
  }

  /** Peers skipped now. */
  get size(): number {
    const now = this.#now();
    let n = 0;
    for (const until of this.#until.values()) if (until > now) n++;
    return n;
  }
}
