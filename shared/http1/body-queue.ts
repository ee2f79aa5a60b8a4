/**
 * A response body between the socket and its one consumer: chunks queue up to
 * a bound (then the socket is paused), and a consumer that waits longer than
 * the idle timeout for a next chunk gets an error. Time the consumer spends
 * elsewhere (its own client holding it back) never counts as the sender idle.
 */
import { released } from '../chunk-pool.ts';
import { WaitTimer } from '../wait-timer.ts';

export interface BodyQueueInit {
  /** Queued bytes at which the socket is paused. */
  highWaterBytes: number;
  /** Longest wait for a next chunk; then `onIdle` decides what fails. */
  idleTimeoutMs: number;
  /** Called when the consumer waited `idleTimeoutMs` for nothing. */
  onIdle: () => void;
  /** Called when the queue fell below the bound again (resume the socket). */
  onDrain: () => void;
  /** Called when the consumer stops reading before the body ended or failed (drop the connection). */
  onAbandon: () => void;
}

export class BodyQueue {
  readonly #init: BodyQueueInit;
  readonly #chunks: Uint8Array[] = [];
  #head = 0;
  #queuedBytes = 0;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  readonly #idle: WaitTimer;
  #iterating = false;

  constructor(init: BodyQueueInit) {
    this.#init = init;
    this.#idle = new WaitTimer(init.idleTimeoutMs, () => init.onIdle());
  }

  /** Adds a chunk; false when the bound is reached and the socket should pause. */
  push(chunk: Uint8Array): boolean {
    this.#chunks.push(chunk);
    this.#queuedBytes += chunk.length;
    this.#wakeUp();
    return this.#queuedBytes < this.#init.highWaterBytes;
  }

  /** No chunk will follow. */
  end(): void {
    this.#ended = true;
    this.#wakeUp();
  }

  /**
   * The body failed: the consumer's next read fails with `err`. Queued chunks
   * are dropped, so the error is not held up behind a full queue; a caller
   * that resumes elsewhere resumes from the bytes it has seen. Nobody had
   * them: pooled ones go back.
   */
  fail(err: Error): void {
    this.#error ??= err;
    for (let i = this.#head; i < this.#chunks.length; i++) released(this.#chunks[i]!);
    this.#chunks.length = 0;
    this.#head = 0;
    this.#queuedBytes = 0;
    this.#wakeUp();
  }

  /** The chunks in order, once; fails with the body's error. */
  async *chunks(): AsyncGenerator<Uint8Array> {
    if (this.#iterating) throw new Error('a body can be read once');
    this.#iterating = true;
    try {
      for (;;) {
        if (this.#error !== undefined) throw this.#error;
        if (this.#head < this.#chunks.length) {
          const chunk = this.#chunks[this.#head]!;
          this.#chunks[this.#head++] = EMPTY;
          if (this.#head === this.#chunks.length) {
            this.#chunks.length = 0;
            this.#head = 0;
          }
          const wasFull = this.#queuedBytes >= this.#init.highWaterBytes;
          this.#queuedBytes -= chunk.length;
          if (wasFull && this.#queuedBytes < this.#init.highWaterBytes) this.#init.onDrain();
          yield chunk;
          continue;
        }
        if (this.#ended) return;
        await this.#next();
      }
    } finally {
      this.#idle.stop();
      // Left early (a break, or return()): nobody will read the rest.
      if (!this.#ended && this.#error === undefined) this.#init.onAbandon();
    }
  }

  #next(): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
      this.#idle.start();
    });
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    this.#idle.end();
    wake?.();
  }
}

const EMPTY = new Uint8Array(0);
