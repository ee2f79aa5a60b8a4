/**
 * The HTTP side of fetching from other nodes' mirrors: one keep-alive pool,
 * the peer-request header on every request, and an idle watchdog that cuts a
 * peer which stops sending.
 */
import { Agent, request, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { Provider } from '../p2p/router.ts';

/**
 * Marks a request from another Shoal mirror. Such a request is answered from
 * the local store only, so a miss never travels on from peer to peer.
 */
export const PEER_REQUEST_HEADER = 'Shoal-Peer-Request';

export function isPeerRequest(headers: IncomingHttpHeaders): boolean {
  return headers[PEER_REQUEST_HEADER.toLowerCase()] !== undefined;
}

/** A peer sent nothing (no response, or no next byte) for the idle timeout. */
export class PeerIdleError extends Error {
  override name = 'PeerIdleError';
}

export interface PeerClientInit {
  /** Port of every peer's mirror. */
  port: number;
  /** Longest wait for a response or for the next body byte before the peer is cut. */
  idleTimeoutMs: number;
}

export interface PeerRequest {
  readonly method: 'GET' | 'HEAD';
  /** Path and query, already valid for the registry API. */
  readonly path: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Aborts the request and its body, e.g. when our own client went away. */
  readonly signal: AbortSignal;
}

export interface PeerResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /**
   * The body, once. Fails with PeerIdleError when a wanted chunk does not
   * arrive within the idle timeout; time our consumer spends elsewhere (a slow
   * client holding back the stream) does not count.
   */
  readonly body: AsyncIterable<Uint8Array>;
  /** Drops the body and its connection, unless it was read to the end. */
  discard(): void;
}

export class PeerClient {
  readonly #port: number;
  readonly #idleTimeoutMs: number;
  readonly #agent = new Agent({ keepAlive: true, scheduling: 'lifo' });

  constructor(init: PeerClientInit) {
    this.#port = init.port;
    this.#idleTimeoutMs = init.idleTimeoutMs;
  }

  async request(provider: Provider, req: PeerRequest): Promise<PeerResponse> {
    try {
      return await this.#send(provider, req);
    } catch (err) {
      // A pooled connection the peer closed while it sat idle: Node's advice is to retry once on a new one.
      if (!(err instanceof StaleSocketError)) throw err;
      return this.#send(provider, req);
    }
  }

  /** Closes pooled connections; requests in flight fail. */
  close(): void {
    this.#agent.destroy();
  }

  #send(provider: Provider, { method, path, headers, signal }: PeerRequest): Promise<PeerResponse> {
    return new Promise((resolve, reject) => {
      const req: ClientRequest = request({
        hostname: provider.host,
        port: this.#port,
        method,
        path,
        agent: this.#agent,
        signal,
        headers: { ...headers, [PEER_REQUEST_HEADER]: '1' },
      });
      const timer = setTimeout(() => req.destroy(new PeerIdleError(`no response from ${provider.host} within ${this.#idleTimeoutMs} ms`)), this.#idleTimeoutMs);
      // Kept for the request's whole life: an 'error' without a listener would crash the process.
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(req.reusedSocket && err.code === 'ECONNRESET' ? new StaleSocketError(err.message) : err);
      });
      req.once('response', (res: IncomingMessage) => {
        clearTimeout(timer);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: watched(res, this.#idleTimeoutMs, provider.host),
          discard: () => {
            // A finished body still has to be read out, or its connection never goes back to the pool.
            if (res.complete) res.resume();
            else res.destroy();
          },
        });
      });
      req.end();
    });
  }
}

/** A Content-Length header as a number, or undefined when absent or not a plain decimal. */
export function contentLength(headers: IncomingHttpHeaders): number | undefined {
  const text = headers['content-length'];
  if (text === undefined || !/^[0-9]{1,15}$/.test(text)) return undefined;
  return Number(text);
}

class StaleSocketError extends Error {}

async function* watched(res: IncomingMessage, idleTimeoutMs: number, host: string): AsyncGenerator<Uint8Array> {
  const chunks = res[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>;
  try {
    // Ends with the body: the stream's iterator returns done or fails (idle cut, reset, abort).
    for (;;) {
      const timer = setTimeout(() => res.destroy(new PeerIdleError(`${host} sent nothing for ${idleTimeoutMs} ms`)), idleTimeoutMs);
      let next: IteratorResult<Uint8Array>;
      try {
        next = await chunks.next();
      } finally {
        clearTimeout(timer);
      }
      if (next.done === true) return;
      yield next.value;
    }
  } finally {
    if (!res.complete) res.destroy();
  }
}
