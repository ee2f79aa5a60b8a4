/**
 * Bearer tokens by (registry, realm, service, scope, credential), kept until
 * shortly before they expire. The token spec gives a token 60 s when the
 * response names no `expires_in`; the lifetime counts from when the answer
 * arrived here (as containerd does), not from `issued_at`, so a token server
 * with a skewed clock cannot make tokens look expired or immortal.
 */

/** The spec's lifetime of a token whose response has no `expires_in`. */
export const DEFAULT_TOKEN_LIFETIME_S = 60;

export interface TokenCacheInit {
  /** Most tokens kept; the soonest to expire go first. Default 1000. */
  maxEntries?: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
}

interface Entry {
  readonly token: string;
  /** When the token stops being handed out: a little before it really expires. */
  readonly until: number;
}

/** How much earlier than its expiry a token is dropped: 10% of its life, at most 10 s. */
export function refreshMarginMs(lifetimeMs: number): number {
  return Math.min(10_000, lifetimeMs / 10);
}

export class TokenCache {
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();

  constructor(init: TokenCacheInit = {}) {
    this.#maxEntries = init.maxEntries ?? 1000;
    this.#now = init.now ?? Date.now;
  }

  get(key: string): string | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.until > this.#now()) return entry.token;
    this.#entries.delete(key);
    return undefined;
  }

  /** Keeps `token` for `expiresInS` seconds (undefined or not positive: the spec's 60 s) less the refresh margin. */
  set(key: string, token: string, expiresInS: number | undefined): void {
    const lifetimeMs = (expiresInS !== undefined && Number.isFinite(expiresInS) && expiresInS > 0 ? expiresInS : DEFAULT_TOKEN_LIFETIME_S) * 1000;
    const now = this.#now();
    this.#entries.delete(key);
    this.#entries.set(key, { token, until: now + lifetimeMs - refreshMarginMs(lifetimeMs) });
    if (this.#entries.size > this.#maxEntries) this.#evict(now);
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }

  get size(): number {
    return this.#entries.size;
  }

  #evict(now: number): void {
    for (const [key, entry] of this.#entries) if (entry.until <= now) this.#entries.delete(key);
    const excess = this.#entries.size - this.#maxEntries;
    if (excess <= 0) return;
    const soonest = [...this.#entries].sort(([, a], [, b]) => a.until - b.until).slice(0, excess);
    for (const [key] of soonest) this.#entries.delete(key);
  }
}
