/**
 * A circuit breaker for one upstream registry. Closed: calls go through and
 * consecutive failures are counted. After `failureThreshold` failures, each
 * within `windowMs` of the one before, it opens: calls fail at once for
 * `cooldownMs`. Then it is half-open: one call (the probe) goes through while
 * the others still fail fast; the probe's success closes the circuit, its
 * failure opens it for another cooldown.
 */

export type CircuitState = 'closed' | 'open' | 'half-open';

/** What a finished call says about the upstream. */
export type CallOutcome = 'success' | 'failure' | 'ignored';

export interface CircuitBreakerInit {
  /** Consecutive failures that open the circuit. Default 5. */
  failureThreshold?: number;
  /** Failures further apart than this do not add up; the count starts again. Default 30 s. */
  windowMs?: number;
  /** How long an open circuit fails calls before a probe may go through. Default 10 s. */
  cooldownMs?: number;
  /** Called on every change of state. */
  onStateChange?: (to: CircuitState, from: CircuitState) => void;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
}

export const CIRCUIT_BREAKER_DEFAULTS = { failureThreshold: 5, windowMs: 30_000, cooldownMs: 10_000 } as const;

/** The call was not made: the circuit is open, or its probe is still out. */
export class CircuitOpenError extends Error {
  override name = 'CircuitOpenError';
  /** How long until a probe may go through (0: a probe is out now). */
  readonly retryInMs: number;
  constructor(message: string, retryInMs: number) {
    super(message);
    this.retryInMs = retryInMs;
  }
}

export class CircuitBreaker {
  readonly #threshold: number;
  readonly #windowMs: number;
  readonly #cooldownMs: number;
  readonly #onStateChange: ((to: CircuitState, from: CircuitState) => void) | undefined;
  readonly #now: () => number;

  #state: CircuitState = 'closed';
  #failures = 0;
  #lastFailureAt = 0;
  #openedAt = 0;
  /** The call let through in half-open state, until it reports. */
  #probe: object | undefined;

  constructor(init: CircuitBreakerInit = {}) {
    this.#threshold = Math.max(1, init.failureThreshold ?? CIRCUIT_BREAKER_DEFAULTS.failureThreshold);
    this.#windowMs = init.windowMs ?? CIRCUIT_BREAKER_DEFAULTS.windowMs;
    this.#cooldownMs = init.cooldownMs ?? CIRCUIT_BREAKER_DEFAULTS.cooldownMs;
    this.#onStateChange = init.onStateChange;
    this.#now = init.now ?? Date.now;
  }

  get state(): CircuitState {
    if (this.#state === 'open' && this.#now() - this.#openedAt >= this.#cooldownMs) this.#set('half-open');
    return this.#state;
  }

  /** Consecutive failures counted so far (while closed). */
  get failures(): number {
    return this.#failures;
  }

  /**
   * Runs `call` unless the circuit is open; `judge` says what its error means
   * for the upstream (a success is a success). Throws CircuitOpenError without
   * calling when the circuit is open.
   */
  async run<T>(call: () => Promise<T>, judge: (err: unknown) => CallOutcome): Promise<T> {
    const permit = this.#acquire();
    let outcome: CallOutcome = 'ignored';
    try {
      const value = await call();
      outcome = 'success';
      return value;
    } catch (err) {
      outcome = judge(err);
      throw err;
    } finally {
      this.#record(permit, outcome);
    }
  }

  #acquire(): object {
    const state = this.state;
    if (state === 'open') {
      const retryInMs = Math.max(0, this.#cooldownMs - (this.#now() - this.#openedAt));
      throw new CircuitOpenError(`circuit open after ${this.#threshold} consecutive failures; next try in ${Math.ceil(retryInMs / 1000)} s`, retryInMs);
    }
    const permit = {};
    if (state === 'half-open') {
      if (this.#probe !== undefined) throw new CircuitOpenError('circuit half-open: a probe is already under way', 0);
      this.#probe = permit;
    }
    return permit;
  }

  #record(permit: object, outcome: CallOutcome): void {
    const now = this.#now();
    if (this.#probe !== undefined) {
      // Half-open: only the probe's result counts; calls begun before the circuit opened are stale news.
      if (permit !== this.#probe) return;
      this.#probe = undefined;
      if (outcome === 'success') this.#close();
      else if (outcome === 'failure') this.#open(now);
      // 'ignored' (e.g. the caller gave up): the next call probes instead.
      return;
    }
    if (this.#state !== 'closed') return;
    if (outcome === 'success') {
      this.#failures = 0;
    } else if (outcome === 'failure') {
      if (this.#failures > 0 && now - this.#lastFailureAt > this.#windowMs) this.#failures = 0;
      this.#failures++;
      this.#lastFailureAt = now;
      if (this.#failures >= this.#threshold) this.#open(now);
    }
  }

  #open(now: number): void {
    this.#openedAt = now;
    this.#failures = 0;
    this.#set('open');
  }

  #close(): void {
    this.#failures = 0;
    this.#set('closed');
  }

  #set(to: CircuitState): void {
    const from = this.#state;
    this.#state = to;
    if (from !== to) this.#onStateChange?.(to, from);
  }
}
