/**
 * A time limit on each wait of a long transfer (for the next chunk, for a
 * socket to drain): one timer for all of its waits, re-armed for each, so
 * none is allocated per chunk. Time between waits never counts.
 */
export class WaitTimer {
  readonly #ms: number;
  readonly #onExpired: () => void;
  #timer: NodeJS.Timeout | undefined;
  #waiting = false;

  /** `onExpired` runs when a wait lasts `ms`, once per such wait. */
  constructor(ms: number, onExpired: () => void) {
    this.#ms = ms;
    this.#onExpired = onExpired;
  }

  /** A wait begins. */
  start(): void {
    this.#waiting = true;
    if (this.#timer === undefined) this.#timer = setTimeout(() => this.#expire(), this.#ms);
    else this.#timer.refresh();
  }

  /** The wait is over. */
  end(): void {
    this.#waiting = false;
  }

  /** No more waits: the timer goes. */
  stop(): void {
    this.#waiting = false;
    clearTimeout(this.#timer);
  }

  #expire(): void {
    if (!this.#waiting) return;
    this.#waiting = false;
    this.#onExpired();
  }
}
