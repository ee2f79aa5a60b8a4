/**
 * Blobs from an upstream registry, streamed: `GET /v2/<repo>/blobs/<digest>`,
 * from an offset with `Range: bytes=<offset>-`. A blob can be gigabytes, so
 * there is no time limit on the whole, only on silence: the answer, and then
 * each next chunk, must come within the idle timeout. Retries (5xx, broken
 * connections, silence) happen only until the first body byte has arrived;
 * after that a failure ends the body and the caller resumes with a new
 * request at the byte it stopped at.
 *
 * The bytes are not checked here: a digest can only be checked over the
 * whole blob, across every resumed request (see verifiedSlice and the spool).
 */
import { released } from '../chunk-pool.ts';
import type { Digest } from '../digest.ts';
import { WaitTimer } from '../wait-timer.ts';
import { describe } from './exchange.ts';
import { contentLength, describeNetworkError, type HttpRequest } from './transport.ts';
import { UpstreamError } from './types.ts';

export interface OpenBlobOptions {
  /** The first byte wanted; above 0 it is asked for with a Range. Default 0. */
  offset?: number;
  /** Cancels the request and, later, the body. */
  signal: AbortSignal;
  /** Longest wait for the answer, and then for each next chunk of the body. Default 10 s. */
  idleTimeoutMs?: number;
}

export const BLOB_DEFAULTS = { idleTimeoutMs: 10_000 } as const;

/** A blob the registry has begun to send. Read its body or close it. */
export interface UpstreamBlob {
  /** The whole blob's size, from Content-Range (206) or Content-Length (200). */
  readonly size: number;
  /** Where `body` starts. */
  readonly offset: number;
  /**
   * Bytes `offset` to `size - 1` as they arrive, unchecked; read it once.
   * Fails with UpstreamError('unavailable') when the registry goes silent
   * for the idle timeout, the connection breaks, or the body ends short, and
   * with the caller's abort reason when its signal fires. Ending the
   * iteration early closes the connection.
   */
  readonly body: AsyncIterable<Uint8Array>;
  /** Drops the connection unless the body was read to its end. Idempotent. */
  close(): void;
}

export function blobPath(repository: string, digest: Digest): string {
  return `/v2/${repository}/blobs/${digest.text}`;
}

/**
 * Headers for a blob request. `identity`: fetch would otherwise offer gzip
 * and inflate the answer behind our back, and Content-Length and Range would
 * then count other bytes than the blob's.
 */
export function blobRequestHeaders(offset: number): Record<string, string> {
  const headers: Record<string, string> = { accept: '*/*', 'accept-encoding': 'identity' };
  if (offset > 0) headers.range = `bytes=${offset}-`;
  return headers;
}

/**
 * The blob in a 200 or 206 answer to a request from `offset`, once its first
 * chunk has arrived (so a failure before any byte fails here and can be
 * retried). A 206 must carry exactly `bytes <offset>-<size-1>/<size>`; a 200
 * to a Range request (a server that ignores Range) has its first `offset`
 * bytes skipped, as containerd does.
 */
export async function openedBlob(req: HttpRequest, res: Response, offset: number, idleTimeoutMs: number, signal: AbortSignal): Promise<UpstreamBlob> {
  const what = describe(req);
  const encoding = res.headers.get('content-encoding');
  if (encoding !== null && encoding.trim().toLowerCase() !== 'identity') {
    throw new UpstreamError('invalid', req.registry, `${what}: Content-Encoding ${encoding.slice(0, 40)}; a blob must come as stored`, res.status);
  }
  const size = res.status === 206 ? rangeTotal(req, res, offset) : wholeSize(req, res, offset);
  const skip = res.status === 206 ? 0 : offset;
  const chunks = new WatchedBody(res, idleTimeoutMs, signal, req.registry, what);
  let first: Uint8Array | undefined;
  try {
    first = await chunks.next();
  } catch (err) {
    chunks.close();
    throw err;
  }
  return { size, offset, body: bodyFrom(chunks, first, skip, size - offset, req.registry, what), close: () => chunks.close() };
}

/** The size a 206 names, when its range is exactly the one asked for. */
function rangeTotal(req: HttpRequest, res: Response, offset: number): number {
  const header = res.headers.get('content-range') ?? '';
  const m = /^bytes ([0-9]{1,15})-([0-9]{1,15})\/([0-9]{1,15})$/.exec(header.trim());
  const size = m === null ? NaN : Number(m[3]);
  if (m === null || Number(m[1]) !== offset || Number(m[2]) !== size - 1) {
    throw new UpstreamError('invalid', req.registry, `${describe(req)}: asked for bytes ${offset}-, got 206 with Content-Range "${header.slice(0, 80)}"`, 206);
  }
  return size;
}

function wholeSize(req: HttpRequest, res: Response, offset: number): number {
  const size = contentLength(res.headers);
  if (size === undefined) throw new UpstreamError('invalid', req.registry, `${describe(req)}: 200 without a Content-Length`, 200);
  if (offset > size) throw new UpstreamError('invalid', req.registry, `${describe(req)}: asked for bytes ${offset}-, the blob has ${size}`, 200);
  return size;
}

async function* bodyFrom(chunks: WatchedBody, first: Uint8Array | undefined, skip: number, expected: number, registry: string, what: string): AsyncGenerator<Uint8Array> {
  let toSkip = skip;
  let delivered = 0;
  try {
    // Ends when the stream does: WatchedBody returns undefined at its end, or throws.
    for (let chunk = first; chunk !== undefined; chunk = await chunks.next()) {
      let piece = chunk;
      if (toSkip > 0) {
        if (piece.length <= toSkip) {
          toSkip -= piece.length;
          released(piece);
          continue;
        }
        piece = piece.subarray(toSkip);
        toSkip = 0;
      }
      delivered += piece.length;
      if (delivered > expected) throw new UpstreamError('invalid', registry, `${what}: more than the ${expected} bytes announced`);
      yield piece;
    }
    if (delivered < expected) throw new UpstreamError('unavailable', registry, `${what}: body ended after ${delivered} of ${expected} bytes`);
  } finally {
    chunks.close();
  }
}

/**
 * A fetch body read chunk by chunk, cut when a chunk takes longer than the
 * idle timeout. Only the time spent waiting for a chunk counts: a consumer
 * that is slow to ask (backpressure from its own client) is not cut.
 */
class WatchedBody {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  readonly #idleTimeoutMs: number;
  readonly #signal: AbortSignal;
  readonly #registry: string;
  readonly #what: string;
  #received = 0;
  #idle = false;
  #closed = false;
  /** Cancelling the reader ends a read that waits too long (as done) and drops the connection. */
  readonly #wait: WaitTimer;

  constructor(res: Response, idleTimeoutMs: number, signal: AbortSignal, registry: string, what: string) {
    this.#reader = res.body?.getReader();
    this.#idleTimeoutMs = idleTimeoutMs;
    this.#signal = signal;
    this.#registry = registry;
    this.#what = what;
    this.#wait = new WaitTimer(idleTimeoutMs, () => {
      this.#idle = true;
      this.close();
    });
  }

  /** The next chunk, or undefined at the end of the body. */
  async next(): Promise<Uint8Array | undefined> {
    if (this.#reader === undefined || this.#closed) return undefined;
    this.#wait.start();
    let result: Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>['read']>>;
    try {
      result = await this.#reader.read();
    } catch (err) {
      if (this.#signal.aborted) throw this.#signal.reason;
      throw new UpstreamError('unavailable', this.#registry, `${this.#what}: body broke after ${this.#received} bytes: ${describeNetworkError(err)}`);
    } finally {
      this.#wait.end();
    }
    if (this.#idle) throw new UpstreamError('unavailable', this.#registry, `${this.#what}: sent nothing for ${this.#idleTimeoutMs} ms after ${this.#received} bytes`);
    if (result.done) {
      this.#wait.stop();
      return undefined;
    }
    this.#received += result.value.length;
    return result.value;
  }

  close(): void {
    this.#wait.stop();
    if (this.#closed) return;
    this.#closed = true;
    void this.#reader?.cancel().catch(() => {});
  }
}
