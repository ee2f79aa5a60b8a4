/** Writing an async source to an HTTP response with backpressure, without letting go of the response on failure. */
import type { ServerResponse } from 'node:http';
import { released } from './chunk-pool.ts';
import { WaitTimer } from './wait-timer.ts';

/**
 * A client that takes no byte for this long is dropped. Its response holds
 * what it reads (a spool download, which is not retired or evicted while
 * read, or a content file), and a client that stopped reading but keeps its
 * connection open would hold it for as long as the connection lives.
 */
export const STALLED_CLIENT_MS = 60_000;

/**
 * Writes every chunk, waiting for 'drain' when the socket is full, then ends
 * the response. Fails when the client goes away, takes nothing for
 * `stalledAfterMs` (the response is then destroyed), or the source fails; the
 * caller decides what to do with the response then (headersSent tells whether
 * anything went out). Breaking out of the loop closes the source. A chunk
 * from a ChunkPool goes back to it once the socket has written it.
 */
export async function streamToResponse(res: ServerResponse, source: AsyncIterable<Uint8Array>, stalledAfterMs = STALLED_CLIENT_MS): Promise<void> {
  const stall = new StallWatch(res, stalledAfterMs);
  try {
    for await (const chunk of source) {
      if (res.destroyed) throw stall.error();
      // Only a write that succeeded releases: after an error the socket may still hold the bytes.
      if (!res.write(chunk, (err) => err == null && released(chunk))) await stall.drained();
    }
  } finally {
    stall.stop();
  }
  res.end();
}

/** The response's waits for 'drain', each with its time limit. */
class StallWatch {
  readonly #res: ServerResponse;
  readonly #ms: number;
  readonly #wait: WaitTimer;
  #stalled = false;

  constructor(res: ServerResponse, ms: number) {
    this.#res = res;
    this.#ms = ms;
    this.#wait = new WaitTimer(ms, () => {
      this.#stalled = true;
      res.destroy();
    });
  }

  async drained(): Promise<void> {
    this.#wait.start();
    try {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          this.#res.off('close', onClose);
          resolve();
        };
        const onClose = () => {
          this.#res.off('drain', onDrain);
          reject(this.error());
        };
        this.#res.once('drain', onDrain);
        this.#res.once('close', onClose);
      });
    } finally {
      this.#wait.end();
    }
  }

  error(): Error {
    return new Error(this.#stalled ? `client took nothing for ${this.#ms} ms` : 'client went away');
  }

  stop(): void {
    this.#wait.stop();
  }
}
