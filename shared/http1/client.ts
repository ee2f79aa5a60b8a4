/**
 * A small HTTP/1.1 client for traffic between Shoal mirrors: GET and HEAD,
 * bodies framed by Content-Length, kept-alive connections per server, and
 * reads into pooled buffers (see connection.ts for why). It speaks only what
 * a Shoal mirror sends; anything else is an HttpProtocolError.
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
  readonly #pool = new ChunkPool(READ_BUFFER_BYTES, READ_BUFFERS_KEPT);
  /** Idle connections by `host port`, the most recently used last. */
  readonly #idle = new Map<string, Connection[]>();
  readonly #idleTimers = new Map<Connection, NodeJS.Timeout>();
  readonly #all = new Set<Connection>();
  #closed = false;

  constructor(init: Http1ClientInit) {
    this.#idleTimeoutMs = init.idleTimeoutMs;
    this.#maxIdle = init.maxIdlePerServer ?? 4;
    this.#keepIdleMs = init.keepIdleMs ?? 30_000;
  }

  /** Sends `req` to host:port; resolves with the response once its head has arrived. */
  async request(host: string, port: number, req: Http1Request): Promise<Http1Response> {
    if (this.#closed) throw new Error('HTTP client closed');
    const head = requestHead(host, port, req);
    const reused = this.#takeIdle(host, port);
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
        pool: this.#pool,
        idleTimeoutMs: this.#idleTimeoutMs,
        onReusable: (c) => this.#putIdle(host, port, c),
        onClosed: (c) => this.#forget(host, port, c),
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

  #takeIdle(host: string, port: number): Connection | undefined {
    const conn = this.#idle.get(`${host} ${port}`)?.pop();
    if (conn !== undefined) {
      clearTimeout(this.#idleTimers.get(conn));
      this.#idleTimers.delete(conn);
    }
    return conn;
  }

  #putIdle(host: string, port: number, conn: Connection): void {
    const key = `${host} ${port}`;
    const list = this.#idle.get(key) ?? [];
    this.#idle.set(key, list);
    if (list.length >= this.#maxIdle) {
      conn.destroy();
      return;
    }
    list.push(conn);
    const timer = setTimeout(() => conn.destroy(), this.#keepIdleMs);
    timer.unref();
    this.#idleTimers.set(conn, timer);
  }

  #forget(host: string, port: number, conn: Connection): void {
    this.#all.delete(conn);
    clearTimeout(this.#idleTimers.get(conn));
    this.#idleTimers.delete(conn);
    const key = `${host} ${port}`;
    const list = this.#idle.get(key);
    if (list === undefined) return;
    const i = list.indexOf(conn);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#idle.delete(key);
  }
}
