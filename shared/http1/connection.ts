/**
 * One HTTP/1.1 connection, one exchange at a time. The socket reads straight
 * into buffers from a ChunkPool (net's `onread`, see read-area.ts), and body
 * bytes reach the consumer as views of those buffers: no fresh buffer per
 * read. Node's own client allocates one for every read, and streaming a large
 * blob through it made V8 run a full GC every few tens of MiB (measured: 29
 * per GiB).
 */
import { connect, isIP, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';
import type { ChunkPool } from '../chunk-pool.ts';
import { BodyQueue } from './body-queue.ts';
import { ChunkedDecoder } from './chunked.ts';
import { ReadArea } from './read-area.ts';
import { HttpProtocolError, MAX_HEAD_BYTES, parseResponseHead } from './response-head.ts';

export interface Http1Request {
  readonly method: 'GET' | 'HEAD';
  /** Path and query, already valid for the server's API. */
  readonly path: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Aborts the exchange, response or body. */
  readonly signal: AbortSignal;
}

export interface Http1Response {
  readonly status: number;
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  /**
   * The body, once. A chunk may be a view of a pooled buffer: pass it on to
   * released() once it is written (stream-response does), or just drop it.
   */
  readonly body: AsyncIterable<Uint8Array>;
  /** Drops the body and its connection, unless all of it already arrived. */
  discard(): void;
}

/** Nothing came (no response, or no next body byte) within the idle timeout. */
export class IdleTimeoutError extends Error {
  override name = 'IdleTimeoutError';
}

/** A kept-alive connection the server had closed: the request never reached it, so it can go again on a new one. */
export class StaleConnectionError extends Error {
  override name = 'StaleConnectionError';
}

export interface ConnectionInit {
  host: string;
  port: number;
  /** Over TLS, the server's certificate checked against the host name and `ca` (default: Node's CAs). Default: plain TCP. */
  tls?: { ca?: string };
  pool: ChunkPool;
  /** Longest wait for the response head, and for each next body chunk. */
  idleTimeoutMs: number;
  /** The exchange ended with the connection fit for another one. */
  onReusable: (c: Connection) => void;
  /** The connection is closed (by either side); it must not be used again. */
  onClosed: (c: Connection) => void;
}

/** Bytes queued for a slow consumer before the socket stops reading. */
const BODY_HIGH_WATER_BYTES = 1024 * 1024;
/** A smaller piece is copied out rather than handed out as a view (heads, small bodies, tails): its room is read over. */
const COPY_BELOW_BYTES = 4 * 1024;

interface Exchange {
  readonly method: string;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
  phase: 'head' | 'body';
  /** Head bytes so far when the head spans reads (copied: read buffers are reused). */
  partialHead: Buffer | undefined;
  /** Whether any byte of the response arrived (after one, a failure is no stale connection). */
  answered: boolean;
  /** Body bytes still to come; Infinity until the server closes (or, chunked, the decoder is done). */
  remaining: number;
  /** For a chunked body. */
  chunked: ChunkedDecoder | undefined;
  reusable: boolean;
  body: BodyQueue | undefined;
  headTimer: NodeJS.Timeout | undefined;
  resolve: (res: Http1Response) => void;
  reject: (err: Error) => void;
}

export class Connection {
  readonly #init: ConnectionInit;
  readonly #socket: Socket;
  readonly #area: ReadArea;
  #exchange: Exchange | undefined;
  /** Exchanges this connection carried, the current one included. */
  #exchanges = 0;
  #closed = false;

  private constructor(init: ConnectionInit, socket: Socket, area: ReadArea) {
    this.#init = init;
    this.#socket = socket;
    this.#area = area;
  }

  /** A new connection, once connected. */
  static open(init: ConnectionInit, signal: AbortSignal): Promise<Connection> {
    return new Promise((resolve, reject) => {
      let conn: Connection | undefined = undefined;
      // net asks for the first buffer inside connect(), before `conn` exists.
      const area = new ReadArea(init.pool);
      const onread = { buffer: () => area.next(), callback: (n: number, buf: Buffer) => conn!.#onRead(n, buf) };
      const socket = init.tls
        ? // TLS sockets take net's `onread` too (checked on Node 24); @types/node leaves it out of ConnectionOptions.
          connectTls({ host: init.host, port: init.port, servername: isIP(init.host) === 0 ? init.host : undefined, ca: init.tls.ca, ALPNProtocols: ['http/1.1'], ...({ onread } as object) })
        : connect({ host: init.host, port: init.port, onread });
      socket.setNoDelay(true);
      conn = new Connection(init, socket, area);
      const c = conn;
      const onAbort = () => socket.destroy(abortError(signal));
      const timer = setTimeout(() => socket.destroy(new IdleTimeoutError(`no connection to ${init.host}:${init.port} within ${init.idleTimeoutMs} ms`)), init.idleTimeoutMs);
      signal.addEventListener('abort', onAbort, { once: true });
      const connected = init.tls ? 'secureConnect' : 'connect';
      const settle = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        socket.off(connected, onConnect);
        socket.off('error', onError);
      };
      const onConnect = () => {
        settle();
        resolve(c);
      };
      const onError = (err: Error) => {
        settle();
        reject(err);
      };
      socket.once(connected, onConnect);
      socket.once('error', onError);
      // Kept for the socket's whole life: an 'error' without a listener would crash the process.
      socket.on('error', (err: Error) => c.#destroy(err));
      socket.on('end', () => c.#onEnd());
      socket.on('close', () => c.#onClose());
      if (signal.aborted) onAbort();
    });
  }

  /** Sends a request, `head` its bytes from requestHead(); resolves once the response head has arrived. */
  send(req: Http1Request, head: string): Promise<Http1Response> {
    if (this.#closed || this.#exchange !== undefined) return Promise.reject(new Error('connection busy or closed'));
    this.#exchanges++;
    return new Promise((resolve, reject) => {
      const onAbort = () => this.#destroy(abortError(req.signal));
      const ex: Exchange = {
        method: req.method,
        signal: req.signal,
        onAbort,
        phase: 'head',
        partialHead: undefined,
        answered: false,
        remaining: 0,
        chunked: undefined,
        reusable: false,
        body: undefined,
        headTimer: setTimeout(
          () => this.#destroy(new IdleTimeoutError(`no response from ${this.#init.host}:${this.#init.port} within ${this.#init.idleTimeoutMs} ms`)),
          this.#init.idleTimeoutMs,
        ),
        resolve,
        reject,
      };
      this.#exchange = ex;
      if (req.signal.aborted) return onAbort();
      req.signal.addEventListener('abort', onAbort, { once: true });
      // Reading may have stopped under backpressure at the end of the last body.
      this.#socket.resume();
      this.#socket.write(head);
    });
  }

  /** Closes the connection; an exchange in progress fails with `err`. */
  destroy(err?: Error): void {
    this.#destroy(err ?? new Error('connection closed'));
  }

  /** Returns false to stop reading (the body queue is full). */
  #onRead(n: number, buf: Buffer): boolean {
    const ex = this.#exchange;
    if (ex === undefined) {
      this.#destroy(new HttpProtocolError('bytes from the server outside a response'));
      return false;
    }
    ex.answered = true;
    const data = buf.subarray(0, n);
    if (ex.phase === 'body') return this.#deliver(ex, data, n);
    const all = ex.partialHead === undefined ? data : Buffer.concat([ex.partialHead, data]);
    const end = all.indexOf('\r\n\r\n', Math.max(0, (ex.partialHead?.length ?? 0) - 3));
    if (end < 0 ? all.length > MAX_HEAD_BYTES : end > MAX_HEAD_BYTES) {
      this.#destroy(new HttpProtocolError(`response head over ${MAX_HEAD_BYTES} bytes`));
      return false;
    }
    if (end < 0) {
      ex.partialHead = Buffer.from(all);
      return true;
    }
    let head;
    try {
      head = parseResponseHead(all.toString('latin1', 0, end), ex.method);
    } catch (err) {
      this.#destroy(err as Error);
      return false;
    }
    clearTimeout(ex.headTimer);
    ex.partialHead = undefined;
    ex.phase = 'body';
    ex.remaining = typeof head.bodyLength === 'number' ? head.bodyLength : Infinity;
    if (head.bodyLength === 'chunked') ex.chunked = new ChunkedDecoder();
    ex.reusable = head.reusable;
    const body = new BodyQueue({
      highWaterBytes: BODY_HIGH_WATER_BYTES,
      idleTimeoutMs: this.#init.idleTimeoutMs,
      onIdle: () => this.#destroy(new IdleTimeoutError(`${this.#init.host}:${this.#init.port} sent nothing for ${this.#init.idleTimeoutMs} ms`)),
      // Only while this is the connection's exchange: a finished body's consumer must not restart reads for the next one.
      onDrain: () => {
        if (this.#exchange === ex) this.#socket.resume();
      },
      onAbandon: () => {
        if (this.#exchange === ex) this.#destroy(new Error('response body abandoned'));
      },
    });
    ex.body = body;
    ex.resolve({
      status: head.status,
      headers: head.headers,
      body: body.chunks(),
      discard: () => {
        if (this.#exchange === ex) this.#destroy(new Error('response discarded'));
      },
    });
    const rest = all.subarray(end + 4);
    if (ex.remaining > 0 && rest.length === 0) return true;
    // After a head that spanned reads, `rest` is a view of the copy, not of the read area.
    return this.#deliver(ex, rest, all === data ? n : undefined);
  }

  /** Passes body bytes on; `readBytes`: `data` is a view of the last read (that many bytes), not a copy. */
  #deliver(ex: Exchange, data: Buffer, readBytes: number | undefined): boolean {
    if (ex.chunked !== undefined) return this.#deliverChunked(ex, ex.chunked, data);
    const body = ex.body!;
    let piece = data.length > ex.remaining ? data.subarray(0, ex.remaining) : data;
    if (readBytes !== undefined && piece.length > 0) piece = piece.length < COPY_BELOW_BYTES ? Buffer.from(piece) : this.#area.handOut(piece, readBytes);
    let more = true;
    if (piece.length > 0) {
      more = body.push(piece);
      ex.remaining -= piece.length;
    }
    if (data.length > piece.length) {
      // Bytes past the body: never from a sane server; the body itself is whole.
      this.#finish(ex, false);
      this.#destroy(new HttpProtocolError('bytes from the server past the response body'));
      return false;
    }
    if (ex.remaining === 0) {
      this.#finish(ex, ex.reusable);
      // Keep reading while idle, to see the server close the connection.
      return true;
    }
    return more;
  }

  /** Decodes chunked body bytes; the decoder copies them, so the read's room is read over. */
  #deliverChunked(ex: Exchange, decoder: ChunkedDecoder, data: Buffer): boolean {
    let decoded;
    try {
      decoded = decoder.push(data);
    } catch (err) {
      this.#destroy(err as Error);
      return false;
    }
    let more = true;
    for (const piece of decoded.body) more = ex.body!.push(piece);
    if (!decoder.done) return more;
    if (decoded.used < data.length) {
      this.#finish(ex, false);
      this.#destroy(new HttpProtocolError('bytes from the server past the response body'));
      return false;
    }
    this.#finish(ex, ex.reusable);
    return true;
  }

  #finish(ex: Exchange, reusable: boolean): void {
    ex.body?.end();
    ex.signal.removeEventListener('abort', ex.onAbort);
    this.#exchange = undefined;
    if (reusable) this.#init.onReusable(this);
    else this.#destroy(new Error('connection not reusable'));
  }

  #onEnd(): void {
    const ex = this.#exchange;
    // A body read to the close ends here; a chunked one must have ended by itself (else it was cut short).
    if (ex?.phase === 'body' && ex.remaining === Infinity && ex.chunked === undefined) this.#finish(ex, false);
    this.#destroy(new Error(`${this.#init.host}:${this.#init.port} closed the connection`));
  }

  #onClose(): void {
    this.#destroy(new Error(`connection to ${this.#init.host}:${this.#init.port} closed`));
  }

  #destroy(err: Error): void {
    const ex = this.#exchange;
    this.#exchange = undefined;
    if (ex !== undefined) {
      clearTimeout(ex.headTimer);
      ex.signal.removeEventListener('abort', ex.onAbort);
      // A reused connection that failed before any response byte: the server had closed it while it sat idle.
      const stale = !ex.answered && this.#exchanges > 1 && !(err instanceof IdleTimeoutError) && !ex.signal.aborted;
      if (ex.phase === 'head') ex.reject(stale ? new StaleConnectionError(err.message, { cause: err }) : err);
      else ex.body!.fail(err);
    }
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.destroy();
    this.#area.close();
    this.#init.onClosed(this);
  }
}

/**
 * A request's head on the wire; throws on a path or header that would break
 * the framing. Host leaves out the scheme's default port, as fetch and curl
 * do: a signed URL (a registry's redirect to storage) may have signed it so.
 */
export function requestHead(host: string, port: number, req: Http1Request, tls = false): string {
  if (/[\r\n\s]/.test(req.path)) throw new Error(`invalid request path ${JSON.stringify(req.path)}`);
  const name = host.includes(':') ? `[${host}]` : host;
  const authority = port === (tls ? 443 : 80) ? name : `${name}:${port}`;
  let head = `${req.method} ${req.path} HTTP/1.1\r\nHost: ${authority}\r\n`;
  for (const [name, value] of Object.entries(req.headers ?? {})) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\r\n]/.test(value)) throw new Error(`invalid request header ${JSON.stringify(name)}`);
    head += `${name}: ${value}\r\n`;
  }
  return head + '\r\n';
}

function abortError(signal: AbortSignal): Error {
  const err = new Error('request aborted', { cause: signal.reason });
  err.name = 'AbortError';
  return err;
}
