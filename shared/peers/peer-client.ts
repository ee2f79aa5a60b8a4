/**
 * The HTTP side of fetching from other nodes' mirrors: kept-alive connections,
 * the peer-request header on every request, and an idle watchdog that cuts a
 * peer which stops sending. The wire is our own small HTTP/1.1 client, which
 * reads into pooled buffers (shared/http1).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Http1Client, IdleTimeoutError } from '../http1/client.ts';
import type { Provider } from '../p2p/router.ts';

/**
 * Marks a request from another Shoal mirror. Such a request is answered from
 * the local store only, so a miss never travels on from peer to peer.
 */
export const PEER_REQUEST_HEADER = 'Shoal-Peer-Request';

export function isPeerRequest(headers: IncomingHttpHeaders): boolean {
  return headers[PEER_REQUEST_HEADER.toLowerCase()] !== undefined;
}

/** A peer sent nothing (no connection, no response, or no next byte) for the idle timeout. */
export const PeerIdleError = IdleTimeoutError;

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
  readonly #http: Http1Client;

  constructor(init: PeerClientInit) {
    this.#port = init.port;
    this.#http = new Http1Client({ idleTimeoutMs: init.idleTimeoutMs });
  }

  async request(provider: Provider, { method, path, headers, signal }: PeerRequest): Promise<PeerResponse> {
    return this.#http.request(provider.host, this.#port, { method, path, headers: { ...headers, [PEER_REQUEST_HEADER]: '1' }, signal });
  }

  /** Closes pooled connections; requests in flight fail. */
  close(): void {
    this.#http.close();
  }
}

/** A Content-Length header as a number, or undefined when absent or not a plain decimal. */
export function contentLength(headers: IncomingHttpHeaders): number | undefined {
  const text = headers['content-length'];
  if (text === undefined || !/^[0-9]{1,15}$/.test(text)) return undefined;
  return Number(text);
}
