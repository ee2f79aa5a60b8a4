/**
 * Small helpers around @kubernetes/client-node calls: a per-call AbortSignal, and
 * what a failed call was (the Status the server answered), fit for a log line.
 */
import { ApiException, Observable, type ConfigurationOptions, type ObservableMiddleware } from '@kubernetes/client-node';

/**
 * Call options that make one API call honour `signal`. Appended to the client's
 * own middleware: the default merge strategy, `replace`, would drop its User-Agent.
 */
export function withSignal(signal: AbortSignal): ConfigurationOptions<ObservableMiddleware> {
  return {
    middleware: [
      {
        pre: (context) => {
          context.setSignal(signal);
          return new Observable(Promise.resolve(context));
        },
        post: (response) => new Observable(Promise.resolve(response)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

export interface ApiFailure {
  /** The HTTP status; undefined when there was no answer (network, timeout, abort). */
  readonly status: number | undefined;
  /** The Status reason (`NotFound`, `Forbidden`, ...), or the error's name without an answer. */
  readonly reason: string | undefined;
  readonly message: string;
}

/**
 * What went wrong. An ApiException's own message holds the whole body and the
 * response headers on several lines: only the Status's reason and message are kept.
 */
export function describeApiError(err: unknown): ApiFailure {
  if (err instanceof ApiException) {
    const status = parseStatus(err.body);
    return { status: err.code, reason: status?.reason, message: status?.message ?? `HTTP ${err.code}` };
  }
  if (err instanceof Error) {
    // client-node's Watch fails a non-200 answer with Error(statusText) and a statusCode.
    const statusCode = (err as { statusCode?: unknown }).statusCode;
    if (typeof statusCode === 'number') return { status: statusCode, reason: undefined, message: err.message };
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return { status: undefined, reason: err.name, message: `${err.message}${cause}` };
  }
  return { status: undefined, reason: undefined, message: String(err) };
}

function parseStatus(body: unknown): { reason?: string; message?: string } | undefined {
  if (typeof body !== 'string') return undefined;
  try {
    const parsed = JSON.parse(body) as unknown;
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const { reason, message } = parsed as Record<string, unknown>;
    return { reason: typeof reason === 'string' ? reason : undefined, message: typeof message === 'string' ? message : undefined };
  } catch {
    return undefined;
  }
}

/** A Kubernetes API call that failed, said plainly: what was asked, and the server's answer. */
export class KubeApiError extends Error {
  override name = 'KubeApiError';
  readonly status: number | undefined;
  readonly reason: string | undefined;
  constructor(what: string, failure: ApiFailure) {
    super(`${what}: ${failure.status === undefined ? '' : `${failure.status} `}${failure.message}`);
    this.status = failure.status;
    this.reason = failure.reason;
  }
}

/** `promise`, or signal.reason as soon as the signal aborts (the work itself goes on, for others waiting on it). */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    void promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
