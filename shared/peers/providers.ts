/**
 * A request's providers from the DHT, consumed one at a time. The first
 * provider must come within the resolve timeout or the request is a miss.
 * Later ones are wanted only when a peer fails, so the lookup stops at each
 * provider and a new one starts only then: searching the network meanwhile
 * would take CPU from the transfer from the first (hits took 8-14 ms instead
 * of 2-4 ms on a loaded node), and local records come back at once anyway. A
 * provider wanted later must come within the later timeout of being wanted.
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
  /** Longest wait for another provider once one is wanted (after a peer failed). */
  laterTimeoutMs: number;
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
  /** A consumer waits for a provider not found yet: the lookup goes on. */
  #wantMore = false;
  /** Wakes the lookup when a provider is wanted (or the lookup ends). */
  #onWanted: (() => void) | undefined;
  readonly #firstTimer: NodeJS.Timeout;
  #laterTimer: NodeJS.Timeout | undefined;

  constructor(init: ProvidersInit) {
    this.#init = init;
    this.#firstTimer = setTimeout(() => {
      if (this.#found.length === 0) this.#finish();
    }, init.firstTimeoutMs);
    const signal = AbortSignal.any([init.signal, this.#abort.signal]);
    // Also while the lookup waits for a consumer to want another provider.
    init.signal.addEventListener('abort', () => this.#finish(), { once: true });
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
      if (this.#found.length > 0) this.#want();
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
      // One router lookup per provider: each stops (and its network search with it) once it
      // gives a new one, and the next starts only when a consumer wants another.
      for (;;) {
        let added = false;
        // Room for the providers already seen, which the new lookup gives again first.
        for await (const provider of router.lookup(key, { count: lookupCount + this.#seen.size, signal })) {
          if (this.#done) return;
          if (this.#seen.has(provider.peerId) || skip(provider)) continue;
          this.#seen.add(provider.peerId);
          this.#found.push(provider);
          if (!this.#resolved) this.#resolve('hit');
          this.#wantMore = false;
          clearTimeout(this.#laterTimer);
          this.#notify();
          added = true;
          break;
        }
        if (!added || this.#found.length >= want) return;
        await new Promise<void>((resolve) => {
          if (this.#wantMore || this.#done) resolve();
          else this.#onWanted = resolve;
        });
        if (this.#done) return;
      }
    } catch {
      // A failed lookup is a lookup that found no more: the caller answers a miss or fails over.
    } finally {
      this.#finish();
    }
  }

  /** A consumer waits for a provider after the first: the lookup goes on, for at most the later timeout. */
  #want(): void {
    if (this.#wantMore) return;
    this.#wantMore = true;
    this.#laterTimer = setTimeout(() => this.#finish(), this.#init.laterTimeoutMs);
    this.#onWanted?.();
    this.#onWanted = undefined;
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#firstTimer);
    clearTimeout(this.#laterTimer);
    this.#onWanted?.();
    this.#onWanted = undefined;
    if (!this.#resolved) this.#resolve('miss');
    this.#notify();
    // Stopping a lookup aborts its RPCs in flight, synchronously (streams reset, errors built):
    // milliseconds on a busy node. The waiters, woken above, answer first (a miss is a 404 to send).
    setImmediate(() => this.#abort.abort());
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
