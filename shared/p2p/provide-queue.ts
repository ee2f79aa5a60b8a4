/**
 * A bounded queue of provides: a node holding thousands of digests must not
 * flood the DHT when it starts or re-provides. At most `concurrency` provides
 * run at once; pending keys wait in FIFO order, each key at most once; new
 * advertisements go before routine re-provides; a withdrawn key leaves the
 * queue and its running provide is aborted.
 */

export interface ProvideQueueInit {
  /** Provides one key; rejects on failure. The signal aborts it (dropped, timed out, closing). */
  provide(key: string, signal: AbortSignal): Promise<void>;
  /** Provides running at once. */
  readonly concurrency: number;
  /** A provide still running after this long is aborted. */
  readonly timeoutMs: number;
  /** Called once each provide settles (not for dropped ones). */
  onSettled?(key: string, err: unknown): void;
}

export class ProvideQueue {
  readonly #init: ProvideQueueInit;
  // Sets keep insertion order: FIFO with O(1) dedup and removal.
  readonly #urgent = new Set<string>();
  readonly #routine = new Set<string>();
  readonly #running = new Map<string, AbortController>();
  /** Provides not yet settled, dropped ones included: the bound counts these. */
  #active = 0;
  #peak = 0;
  #closed = false;
  #idle: PromiseWithResolvers<void> | undefined;

  constructor(init: ProvideQueueInit) {
    if (!(init.concurrency >= 1)) throw new Error('provide concurrency must be at least 1');
    this.#init = init;
  }

  /** Queues a provide of key unless it is already queued or running; urgent ones go first. */
  enqueue(key: string, urgent = false): void {
    if (this.#closed || this.#running.has(key)) return;
    if (urgent) {
      this.#routine.delete(key);
      this.#urgent.add(key);
    } else if (!this.#urgent.has(key)) {
      this.#routine.add(key);
    }
    this.#pump();
  }

  /** Forgets key: out of the queue, and its running provide aborted. */
  drop(key: string): void {
    this.#urgent.delete(key);
    this.#routine.delete(key);
    const running = this.#running.get(key);
    if (running !== undefined) {
      this.#running.delete(key);
      running.abort();
    }
  }

  /** Keys waiting. */
  get pending(): number {
    return this.#urgent.size + this.#routine.size;
  }

  /** Provides running now. */
  get inFlight(): number {
    return this.#active;
  }

  /** The most provides that ever ran at once. */
  get peakInFlight(): number {
    return this.#peak;
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.pending === 0 && this.#active === 0) return Promise.resolve();
    this.#idle ??= Promise.withResolvers();
    return this.#idle.promise;
  }

  /** Drops everything and aborts running provides; resolves once they settled. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#urgent.clear();
    this.#routine.clear();
    for (const controller of this.#running.values()) controller.abort();
    this.#running.clear();
    await this.idle();
  }

  #next(): string | undefined {
    const from = this.#urgent.size > 0 ? this.#urgent : this.#routine;
    for (const key of from) {
      from.delete(key);
      return key;
    }
    return undefined;
  }

  #pump(): void {
    while (this.#active < this.#init.concurrency) {
      const key = this.#next();
      if (key === undefined) break;
      this.#start(key);
    }
    if (this.pending === 0 && this.#active === 0 && this.#idle !== undefined) {
      this.#idle.resolve();
      this.#idle = undefined;
    }
  }

  #start(key: string): void {
    const controller = new AbortController();
    this.#running.set(key, controller);
    this.#active++;
    this.#peak = Math.max(this.#peak, this.#active);
    // A timer cleared when the provide ends: AbortSignal.timeout's would outlive a provide that
    // takes a millisecond (a push) by the whole timeout, 5000 of them for a node's first advertise.
    const timer = setTimeout(() => controller.abort(new DOMException('provide timed out', 'TimeoutError')), this.#init.timeoutMs);
    timer.unref();
    let error: unknown;
    this.#init
      .provide(key, controller.signal)
      .catch((err: unknown) => {
        error = err ?? new Error('provide failed');
      })
      .finally(() => {
        clearTimeout(timer);
        this.#active--;
        const dropped = this.#running.get(key) !== controller;
        if (!dropped) this.#running.delete(key);
        if (!dropped) this.#init.onSettled?.(key, error);
        this.#pump();
      });
  }
}
