/** Whole messages over libp2p streams: read to the remote's end within a bound, and send with backpressure. */
import type { Stream } from '@libp2p/interface';

export class StreamLengthError extends Error {
  override name = 'StreamLengthError';
}

/**
 * A stream's bytes until the remote closes its side. Once `headBytes` came,
 * `limitFor(head)` says how many bytes the whole may have (it throws for a
 * head it refuses); more is an error, found as soon as they come.
 */
export async function readAll(stream: Stream, headBytes: number, limitFor: (head: Uint8Array) => number, signal: AbortSignal): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let length = 0;
  let limit: number | undefined;
  const onAbort = () => stream.abort(signal.reason as Error);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of stream) {
      const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray();
      parts.push(bytes);
      length += bytes.length;
      if (limit === undefined && length >= headBytes) limit = limitFor(Buffer.concat(parts, headBytes));
      if (limit !== undefined && length > limit) throw new StreamLengthError(`more than the ${limit} bytes expected`);
    }
    signal.throwIfAborted();
    return Buffer.concat(parts, length);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * One message out and the whole answer back, on a stream this node opened. It
 * reads from the start (the answer may come while the message still closes),
 * and resets the stream on any failure.
 */
export async function exchange(stream: Stream, message: Uint8Array, headBytes: number, limitFor: (head: Uint8Array) => number, signal: AbortSignal): Promise<Uint8Array> {
  try {
    const reading = readAll(stream, headBytes, limitFor, signal);
    reading.catch(() => {});
    await sendAll(stream, [message], signal);
    await stream.close({ signal });
    return await reading;
  } catch (err) {
    stream.abort(err as Error);
    throw err;
  }
}

/** Sends bytes, waiting for the stream to drain when its buffer is full. */
export async function sendAll(stream: Stream, parts: readonly Uint8Array[], signal: AbortSignal): Promise<void> {
  for (const part of parts) {
    if (!stream.send(part)) await stream.onDrain({ signal });
  }
}
