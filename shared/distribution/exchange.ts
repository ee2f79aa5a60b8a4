/**
 * Requests to an upstream with the client's time limit and retries. Each
 * attempt has its own timeout, which covers reading the answer too; the
 * caller's signal bounds them all and, when it fires, its reason is thrown as
 * is (the caller gave up: no UpstreamError, nothing learned about upstream).
 */
import type { Logger } from '../log.ts';
import { isRetryableStatus, type RetryPolicy } from './retry.ts';
import { describeNetworkError, discard, readBody, send, type FetchFn, type HttpRequest } from './transport.ts';
import { UpstreamError } from './types.ts';

export interface ExchangerInit {
  fetch: FetchFn;
  /** For answers read as streams (stream()): blobs. Default: `fetch`. */
  streamFetch?: FetchFn;
  /** Longest an attempt may take, answer read included. */
  requestTimeoutMs: number;
  retry: RetryPolicy;
  logger: Logger;
}

export interface BufferedResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Buffer;
}

/** Errors worth another attempt: the upstream did not answer, or answered 5xx. */
export function isRetryable(err: unknown): boolean {
  return err instanceof UpstreamError && err.failure === 'unavailable';
}

export class Exchanger {
  readonly #fetch: FetchFn;
  readonly #streamFetch: FetchFn;
  readonly #timeoutMs: number;
  readonly #retry: RetryPolicy;
  readonly #logger: Logger;

  constructor(init: ExchangerInit) {
    this.#fetch = init.fetch;
    this.#streamFetch = init.streamFetch ?? init.fetch;
    this.#timeoutMs = init.requestTimeoutMs;
    this.#retry = init.retry;
    this.#logger = init.logger;
  }

  /**
   * Sends `req` until an answer other than a retryable 5xx comes, within the
   * retries. `use` sees that answer inside the attempt (its time limit still
   * running) and what it returns is returned; a body it leaves unread is
   * cancelled. A 5xx after the last retry, a connection error or a timeout is
   * UpstreamError('unavailable').
   */
  async run<T>(req: HttpRequest, signal: AbortSignal, use: (res: Response) => Promise<T>): Promise<T> {
    return this.#retry.run(() => this.#attempt(req, signal, use), isRetryable, signal, this.#logRetry(req));
  }

  /** run() that reads the body, at most `limit` bytes (more: UpstreamError('invalid')). */
  buffered(req: HttpRequest, signal: AbortSignal, limit: number): Promise<BufferedResponse> {
    return this.run(req, signal, async (res) => ({
      status: res.status,
      headers: res.headers,
      body: await readBody(res, limit, () => new UpstreamError('invalid', req.registry, `${describe(req)}: answer larger than ${limit} bytes`, res.status)),
    }));
  }

  /**
   * run() for answers too large for one time limit (blobs): each attempt's
   * answer must come within `answerTimeoutMs`, and no limit applies after
   * that; the body's pace is `use`'s to watch. A body `use` leaves unread is
   * cancelled; one it began to read belongs to what it returns (and `use`
   * cancels it itself when it fails after reading). So retries cover failures
   * up to the first chunk `use` reads, and none after.
   */
  async stream<T>(req: HttpRequest, signal: AbortSignal, answerTimeoutMs: number, use: (res: Response) => Promise<T>): Promise<T> {
    return this.#retry.run(() => this.#streamAttempt(req, signal, answerTimeoutMs, use), isRetryable, signal, this.#logRetry(req));
  }

  #logRetry(req: HttpRequest): (n: number, err: unknown, delayMs: number) => void {
    return (n, err, delayMs) =>
      this.#logger.debug('retrying upstream request', { registry: req.registry, method: req.method, host: req.url.host, retry: n, delayMs: Math.round(delayMs), error: err as Error });
  }

  async #streamAttempt<T>(req: HttpRequest, signal: AbortSignal, answerTimeoutMs: number, use: (res: Response) => Promise<T>): Promise<T> {
    signal.throwIfAborted();
    // Not AbortSignal.timeout: that would go on to cut the body too.
    const late = new AbortController();
    const timer = setTimeout(() => late.abort(), answerTimeoutMs);
    let res: Response | undefined;
    try {
      try {
        res = await send(this.#streamFetch, req, AbortSignal.any([signal, late.signal]));
      } finally {
        clearTimeout(timer);
      }
      rejectRetryableStatus(req, res);
      return await use(res);
    } catch (err) {
      throw attemptFailure(err, req, signal, late.signal.aborted ? `no answer within ${answerTimeoutMs} ms` : undefined);
    } finally {
      // A body `use` began to read is no longer ours; discard() leaves a used body alone.
      if (res !== undefined) await discard(res);
    }
  }

  async #attempt<T>(req: HttpRequest, signal: AbortSignal, use: (res: Response) => Promise<T>): Promise<T> {
    signal.throwIfAborted();
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    let res: Response | undefined;
    try {
      res = await send(this.#fetch, req, AbortSignal.any([signal, timeout]));
      rejectRetryableStatus(req, res);
      return await use(res);
    } catch (err) {
      throw attemptFailure(err, req, signal, timeout.aborted ? `no complete answer within ${this.#timeoutMs} ms` : undefined);
    } finally {
      if (res !== undefined) await discard(res);
    }
  }
}

/** `GET registry-1.docker.io/v2/library/nginx/manifests/1.27`: no query (token requests carry scopes there). */
/** A status worth another attempt, thrown as the error the retry policy retries. */
function rejectRetryableStatus(req: HttpRequest, res: Response): void {
  if (isRetryableStatus(res.status)) {
    throw new UpstreamError('unavailable', req.registry, `${describe(req)}: ${res.status} ${res.statusText}`.trimEnd(), res.status);
  }
}

/**
 * What a failed attempt throws: the caller's abort reason as it is (the registry
 * is not to blame), our own errors as they are, else 'unavailable' saying why
 * (`timedOut`, when the attempt's own time limit cut it).
 */
function attemptFailure(err: unknown, req: HttpRequest, signal: AbortSignal, timedOut: string | undefined): unknown {
  if (signal.aborted) return signal.reason;
  if (err instanceof UpstreamError) return err;
  if (timedOut !== undefined) return new UpstreamError('unavailable', req.registry, `${describe(req)}: ${timedOut}`);
  return new UpstreamError('unavailable', req.registry, `${describe(req)}: ${describeNetworkError(err)}`);
}

export function describe(req: HttpRequest): string {
  return `${req.method} ${req.url.host}${req.url.pathname}`;
}
