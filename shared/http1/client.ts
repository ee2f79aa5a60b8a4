/**
 * A small HTTP/1.1 client for the bulk of the bytes a mirror moves (from other
 * mirrors, and blobs from registries): GET and HEAD, bodies framed by
 * Content-Length or chunked, kept-alive connections per server, over TCP or
 * TLS, and reads into pooled buffers (see connection.ts for why). It speaks only what
 * a Shoal mirror or a registry serving a blob sends; anything else is an
 * HttpProtocolError.
 */
import { ChunkPool } from '../chunk-pool.ts';
import { Connection, requestHead, StaleConnectionError, type Http1Request, type Http1Response } from './connection.ts';

export { HttpProtocolError } from './response-head.ts';
export { IdleTimeoutError, type Http1Request, type Http1Response } from './connection.ts';

export interface Http1ClientInit {
  /** Longest wait for a connection, a response head, or a next body chunk. */
  idleTimeoutMs: number;
  /**
   * Idle connections kept per server. Default 4: containerd fetches about
   * three layers at once, and every open connection holds a read buffer.
   */
  maxIdlePerServer?: number;
  /** How long an idle connection is kept. Default 30 s (a Shoal mirror keeps them 65 s). */
  keepIdleMs?: number;
  /** Certificates (PEM) trusted over TLS instead of Node's. Default: Node's (and NODE_EXTRA_CA_CERTS). For tests. */
  ca?: string;
}

/**
 * Read buffers. Every open connection, idle ones included, holds one (net
 * reads into it), so they are not large: 128 KiB is 8 reads per MiB, a few
 * microseconds of syscalls. 16 kept (2 MiB) serve several streams at once
 * without allocating.
 */
const READ_BUFFER_BYTES = 128 * 1024;
const READ_BUFFERS_KEPT = 16;

export class Http1Client {
  readonly #idleTimeoutMs: number;
  readonly #maxIdle: number;
  readonly #keepIdleMs: number;
  readonly #ca: string | undefined;
  readonly #pool = new ChunkPool(READ_BUFFER_BYTES, READ_BUFFERS_KEPT);
  /** Idle connections by `scheme host port`, the most recently used last. */
  readonly #idle = new Map<string, Connection[]>();
  readonly #idleTimers = new Map<Connection, NodeJS.Timeout>();
  readonly #all = new Set<Connection>();
  #closed = false;

  constructor(init: Http1ClientInit) {
    this.#idleTimeoutMs = init.idleTimeoutMs;
    this.#maxIdle = init.maxIdlePerServer ?? 4;
    this.#keepIdleMs = init.keepIdleMs ?? 30_000;
    this.#ca = init.ca;
  }

  /** Sends `req` to host:port (over TLS when `tls`); resolves with the response once its head has arrived. */
  async request(host: string, port: number, req: Http1Request, tls = false): Promise<Http1Response> {
    if (this.#closed) throw new Error('HTTP client closed');
    const head = requestHead(host, port, req, tls);
    const server = `${tls ? 'https' : 'http'} ${host} ${port}`;
    const reused = this.#takeIdle(server);
    if (reused !== undefined) {
      try {
        return await reused.send(req, head);
      } catch (err) {
        // The server closed it while it sat idle; the request never got there.
        if (!(err instanceof StaleConnectionError)) throw err;
      }
    }
    const conn = await Connection.open(
      {
        host,
        port,
        tls: tls ? { ca: this.#ca } : undefined,
        pool: this.#pool,
        idleTimeoutMs: this.#idleTimeoutMs,
        onReusable: (c) => this.#putIdle(server, c),
        onClosed: (c) => this.#forget(server, c),
      },
      req.signal,
    );
    if (this.#closed) {
      conn.destroy();
      throw new Error('HTTP client closed');
    }
    this.#all.add(conn);
    return conn.send(req, head);
  }

  /** Closes every connection; exchanges in flight fail, and so do later requests. */
  close(): void {
    this.#closed = true;
    for (const conn of [...this.#all]) conn.destroy();
  }

  #takeIdle(server: string): Connection | undefined {
    const conn = this.#idle.get(server)?.pop();
    if (conn !== undefined) {
      clearTimeout(this.#idleTimers.get(conn));
      this.#idleTimers.delete(conn);
    }
    return conn;
  }

  #putIdle(server: string, conn: Connection): void {
    const list = this.#idle.get(server) ?? [];
    this.#idle.set(server, list);
    if (list.length >= this.#maxIdle) {
      conn.destroy();
      return;
    }
    list.push(conn);
    const timer = setTimeout(() => conn.destroy(), this.#keepIdleMs);
    timer.unref();
    this.#idleTimers.set(conn, timer);
  }

  #forget(server: string, conn: Connection): void {
    this.#all.delete(conn);
    clearTimeout(this.#idleTimers.get(conn));
    this.#idleTimers.delete(conn);
    const list = this.#idle.get(server);
    if (list === undefined) return;
    const i = list.indexOf(conn);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#idle.delete(server);
  }
}
