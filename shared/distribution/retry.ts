/**
 * Bounded retries with exponential backoff and jitter, for answers that may be
 * different a moment later: 5xx (except 501), connection errors and timeouts.
 * Never for 401/403/404/429: another try would get the same answer, and a
 * rate-limited registry must not be pressed harder.
 */
import { setTimeout as sleep } from 'node:timers/promises';

export interface RetryInit {
  /** Attempts after the first. Default 2. */
  retries?: number;
  /** Backoff before the first retry; doubles for each further one. Default 100 ms. */
  baseDelayMs?: number;
  /** Longest backoff. Default 2 s. */
  maxDelayMs?: number;
  /** Source of jitter in [0, 1), for tests. Default Math.random. */
  random?: () => number;
}

export const RETRY_DEFAULTS = { retries: 2, baseDelayMs: 100, maxDelayMs: 2000 } as const;

/** HTTP statuses worth another try. */
export function isRetryableStatus(status: number): boolean {
  return status >= 500 && status !== 501 && status !== 505;
}

export class RetryPolicy {
  readonly retries: number;
  readonly #baseDelayMs: number;
  readonly #maxDelayMs: number;
  readonly #random: () => number;

  constructor(init: RetryInit = {}) {
    this.retries = Math.max(0, init.retries ?? RETRY_DEFAULTS.retries);
    this.#baseDelayMs = init.baseDelayMs ?? RETRY_DEFAULTS.baseDelayMs;
    this.#maxDelayMs = init.maxDelayMs ?? RETRY_DEFAULTS.maxDelayMs;
    this.#random = init.random ?? Math.random;
  }

  /**
   * The wait before retry `n` (1-based): half the exponential step plus a
   * random part of the other half, so there is always some backoff and
   * callers that failed together do not come back together.
   */
  delayMs(n: number): number {
    const step = Math.min(this.#maxDelayMs, this.#baseDelayMs * 2 ** (n - 1));
    return step / 2 + this.#random() * (step / 2);
  }

  /**
   * Runs `attempt` until it succeeds, throws an error `retryable` rejects, or
   * the retries are spent (the last error is thrown). The caller's signal cuts
   * a backoff short with its reason.
   */
  async run<T>(attempt: (n: number) => Promise<T>, retryable: (err: unknown) => boolean, signal: AbortSignal, onRetry?: (n: number, err: unknown, delayMs: number) => void): Promise<T> {
    for (let n = 0; ; n++) {
      try {
        return await attempt(n);
      } catch (err) {
        if (n >= this.retries || !retryable(err) || signal.aborted) throw err;
        const delayMs = this.delayMs(n + 1);
        onRetry?.(n + 1, err, delayMs);
        await sleep(delayMs, undefined, { signal }).catch(() => signal.throwIfAborted());
      }
    }
  }
}
