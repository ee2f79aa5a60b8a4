/** Writing an async source to an HTTP response with backpressure, without letting go of the response on failure. */
import type { ServerResponse } from 'node:http';
import { released } from './chunk-pool.ts';

/**
 * Writes every chunk, waiting for 'drain' when the socket is full, then ends
 * the response. Fails when the client goes away or the source fails; the
 * caller decides what to do with the response then (headersSent tells whether
 * anything went out). Breaking out of the loop closes the source. A chunk
 * from a ChunkPool goes back to it once the socket has written it.
 */
export async function streamToResponse(res: ServerResponse, source: AsyncIterable<Uint8Array>): Promise<void> {
  for await (const chunk of source) {
    if (res.destroyed) throw new Error('client went away');
    // Only a write that succeeded releases: after an error the socket may still hold the bytes.
    if (!res.write(chunk, (err) => err == null && released(chunk))) await drained(res);
  }
  res.end();
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      res.off('close', onClose);
      resolve();
    };
    const onClose = () => {
      res.off('drain', onDrain);
      reject(new Error('client went away'));
    };
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}
