/**
 * One DHT lookup per request, consumed one provider at a time. The first
 * provider must come within the resolve timeout or the request is a miss;
 * later ones, wanted only when a peer fails, may still arrive until the
 * lookup's overall deadline.
 */
import type { Provider, Router } from '../p2p/router.ts';

export type ResolveOutcome = 'hit' | 'miss';

export interface ProvidersInit {
  router: Router;
  key: string;
  /** Usable providers wanted at most. */
  want: number;
  /** Providers asked of the router: `want` plus room for ones that will be skipped. */
  lookupCount: number;
  /** Longest wait for the first usable provider, from the start of the lookup. */
  firstTimeoutMs: number;
  /** The lookup ends at this time after its start, whatever it found. */
  overallTimeoutMs: number;
  /** Providers not to use (quarantined). */
  skip: (provider: Provider) => boolean;
  /** Ends the lookup early (the client went away). */
  signal: AbortSignal;
  /** Called once: whether a first usable provider came, and after how long. */
  onResolved: (outcome: ResolveOutcome, seconds: number) => void;
}

export class Providers {
  readonly #init: ProvidersInit;
  readonly #started = process.hrtime.bigint();
  readonly #abort = new AbortController();
  readonly #found: Provider[] = [];
  readonly #seen = new Set<string>();
  #taken = 0;
  #done = false;
  #resolved = false;
  #wake: (() => void)[] = [];
  readonly #firstTimer: NodeJS.Timeout;
  readonly #overallTimer: NodeJS.Timeout;

  constructor(init: ProvidersInit) {
    this.#init = init;
    this.#firstTimer = setTimeout(() => {
      if (this.#found.length === 0) this.#finish();
    }, init.firstTimeoutMs);
    this.#overallTimer = setTimeout(() => this.#finish(), init.overallTimeoutMs);
    const signal = AbortSignal.any([init.signal, this.#abort.signal]);
    if (signal.aborted) this.#finish();
    else void this.#run(signal);
  }

  /** The next usable provider, or undefined when there is none (now or ever, for this lookup). */
  async next(): Promise<Provider | undefined> {
    // Each pass either returns or waits for #run to add a provider or finish; #finish is bound by the timers.
    for (;;) {
      if (this.#taken >= this.#init.want) return undefined;
      const provider = this.#found[this.#taken];
      if (provider !== undefined) {
        this.#taken++;
        return provider;
      }
      if (this.#done) return undefined;
      await new Promise<void>((resolve) => this.#wake.push(resolve));
    }
  }

  /** Ends the lookup; providers already found stay available to next(). */
  close(): void {
    this.#finish();
  }

  async #run(signal: AbortSignal): Promise<void> {
    const { router, key, lookupCount, want, skip } = this.#init;
    try {
      for await (const provider of router.lookup(key, { count: lookupCount, signal })) {
        if (this.#done) break;
        if (this.#seen.has(provider.peerId) || skip(provider)) continue;
        this.#seen.add(provider.peerId);
        this.#found.push(provider);
        if (!this.#resolved) this.#resolve('hit');
        this.#notify();
        if (this.#found.length >= want) break;
      }
    } catch {
      // A failed lookup is a lookup that found no more: the caller answers a miss or fails over.
    } finally {
      this.#finish();
    }
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#firstTimer);
    clearTimeout(this.#overallTimer);
    this.#abort.abort();
    if (!this.#resolved) this.#resolve('miss');
    this.#notify();
  }

  #resolve(outcome: ResolveOutcome): void {
    this.#resolved = true;
    this.#init.onResolved(outcome, Number(process.hrtime.bigint() - this.#started) / 1e9);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = [];
    for (const resolve of wake) resolve();
  }
}
