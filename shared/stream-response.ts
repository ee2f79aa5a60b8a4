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
  let stalled = false;
  const gone = () => new Error(stalled ? `client took nothing for ${stalledAfterMs} ms` : 'client went away');
  const wait = new WaitTimer(stalledAfterMs, () => {
    stalled = true;
    res.destroy();
  });
  try {
    for await (const chunk of source) {
      if (res.destroyed) throw gone();
      // Only a write that succeeded releases: after an error the socket may still hold the bytes.
      if (res.write(chunk, (err) => err == null && released(chunk))) continue;
      wait.start();
      try {
        await drained(res, gone);
      } finally {
        wait.end();
      }
    }
  } finally {
    wait.stop();
  }
  res.end();
}

function drained(res: ServerResponse, gone: () => Error): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      res.off('close', onClose);
      resolve();
    };
    const onClose = () => {
      res.off('drain', onDrain);
      reject(gone());
    };
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}
