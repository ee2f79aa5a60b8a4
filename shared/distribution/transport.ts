/**
 * One HTTP exchange with an upstream on Node's fetch, redirects followed here
 * rather than by fetch: the Authorization header goes only to the origin it was
 * meant for (a registry may redirect to a CDN or a storage bucket), and a
 * response body is always either read or cancelled so its connection is freed.
 */
import { released } from '../chunk-pool.ts';
import { UpstreamError } from './types.ts';

export type FetchFn = typeof globalThis.fetch;

export interface HttpRequest {
  /** The registry this is for, as image references name it (`docker.io`): errors carry it. */
  readonly registry: string;
  readonly method: 'GET' | 'HEAD' | 'POST';
  readonly url: URL;
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent to `url`'s origin only; dropped when a redirect leads to another origin. */
  readonly authorization?: string;
  /** A form body, for POST. */
  readonly form?: URLSearchParams;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;

/** Sends `req`, following up to 5 redirects for GET and HEAD. The caller reads or cancels the body. */
export async function send(fetchFn: FetchFn, req: HttpRequest, signal: AbortSignal): Promise<Response> {
  let url = req.url;
  for (let hop = 0; ; hop++) {
    const headers = new Headers(req.headers);
    if (req.authorization !== undefined && url.origin === req.url.origin) headers.set('authorization', req.authorization);
    const res = await fetchFn(url, { method: req.method, headers, body: req.form, redirect: 'manual', signal });
    if (!REDIRECTS.has(res.status) || req.method === 'POST') return res;
    const location = res.headers.get('location');
    await discard(res);
    if (location === null) throw new UpstreamError('invalid', req.registry, `${req.method} ${url.host}${url.pathname}: ${res.status} without a Location`, res.status);
    if (hop >= MAX_REDIRECTS) throw new UpstreamError('invalid', req.registry, `${req.method} ${req.url.host}${req.url.pathname}: more than ${MAX_REDIRECTS} redirects`, res.status);
    const next = new URL(location, url);
    if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new UpstreamError('invalid', req.registry, `redirect to a ${next.protocol} URL`, res.status);
    url = next;
  }
}

/** Drops an unread body so the connection can be reused or closed. */
export async function discard(res: Response): Promise<void> {
  if (res.body !== null && !res.bodyUsed) await res.body.cancel().catch(() => {});
}

/** Reads the whole body, failing with `tooLarge()` past `limit` bytes (checked against Content-Length first). */
export async function readBody(res: Response, limit: number, tooLarge: () => Error): Promise<Buffer> {
  const declared = res.headers.get('content-length');
  if (declared !== null && /^[0-9]+$/.test(declared) && Number(declared) > limit) {
    await discard(res);
    throw tooLarge();
  }
  if (res.body === null) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader: ReadableStreamDefaultReader<Uint8Array> = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
      if (size > limit) throw tooLarge();
    }
    return Buffer.concat(chunks, size);
  } finally {
    // Copied (or dropped): a chunk from a pooled client goes back.
    for (const chunk of chunks) released(chunk);
    // Releases the stream when reading stopped early (too large, or a failure mid-body).
    await reader.cancel().catch(() => {});
  }
}

/** Content-Length as a number, or undefined when absent or not plain decimal. */
export function contentLength(headers: Headers): number | undefined {
  const text = headers.get('content-length');
  if (text === null || !/^[0-9]{1,15}$/.test(text)) return undefined;
  return Number(text);
}

/** A Content-Type without parameters, lowercased; undefined when absent. */
export function mediaTypeOf(headers: Headers): string | undefined {
  const text = headers.get('content-type');
  if (text === null) return undefined;
  const type = text.split(';')[0]?.trim().toLowerCase();
  return type ? type : undefined;
}

/** `ECONNREFUSED`, `ENOTFOUND`, ...: the cause fetch wraps in its "fetch failed" TypeError. */
export function describeNetworkError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code ? `${code} (${cause.message})` : cause.message;
  }
  return err.message;
}
