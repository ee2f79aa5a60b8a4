/**
 * The head of an HTTP/1.1 response (status line and header fields, RFC 9112
 * section 4 and 5) and how its body is framed (section 6.3). Strict: folded
 * lines, bad lengths, a coding other than chunked, or both a Content-Length
 * and chunked, are protocol errors, so a confused or hostile server is
 * dropped rather than guessed at.
 */

/** Longest head accepted, as Node's own default (--max-http-header-size). */
export const MAX_HEAD_BYTES = 16 * 1024;

export class HttpProtocolError extends Error {
  override name = 'HttpProtocolError';
}

export interface ResponseHead {
  status: number;
  /** Lower-case names; a repeated field's values joined with ", ". */
  headers: Record<string, string>;
  /**
   * Body bytes: a number (Content-Length, or 0 when the response cannot have
   * one), `chunked` (see chunked.ts), or `close` when it runs until the server
   * closes the connection.
   */
  bodyLength: number | 'chunked' | 'close';
  /** Whether the connection may carry another request afterwards. */
  reusable: boolean;
}

const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9][0-9]{2})(?: [^\r\n]*)?$/;
const FIELD_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*$/;

/** Parses `head`: the bytes before the blank line that ends it, in latin1. */
export function parseResponseHead(head: string, requestMethod: string): ResponseHead {
  const lines = head.split('\r\n');
  const status = STATUS_LINE.exec(lines[0]!);
  if (status === null) throw new HttpProtocolError(`bad status line ${JSON.stringify(lines[0]!.slice(0, 80))}`);
  // No prototype: a field named `constructor` or `__proto__` is just a field.
  const headers: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const line of lines.slice(1)) {
    const field = FIELD_LINE.exec(line);
    if (field === null) throw new HttpProtocolError(`bad header line ${JSON.stringify(line.slice(0, 80))}`);
    const name = field[1]!.toLowerCase();
    const value = field[2]!;
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  const code = Number(status[2]);
  if (code < 200) throw new HttpProtocolError(`unexpected interim response ${code}`);
  const closes = /(?:^|,)\s*close\s*(?:,|$)/i.test(headers.connection ?? '');
  const http10 = status[1] === '0';
  const reusable = !closes && (!http10 || /(?:^|,)\s*keep-alive\s*(?:,|$)/i.test(headers.connection ?? ''));
  if (requestMethod === 'HEAD' || code === 204 || code === 304) return { status: code, headers, bodyLength: 0, reusable };
  const coding = headers['transfer-encoding'];
  const length = headers['content-length'];
  if (coding !== undefined) {
    // Both framings at once is how requests get smuggled (RFC 9112 section 6.3, item 3): refused.
    if (coding.trim().toLowerCase() !== 'chunked' || length !== undefined) throw new HttpProtocolError(`unsupported Transfer-Encoding ${coding}${length === undefined ? '' : ' with a Content-Length'}`);
    return { status: code, headers, bodyLength: 'chunked', reusable };
  }
  if (length === undefined) return { status: code, headers, bodyLength: 'close', reusable: false };
  // A repeated Content-Length is allowed only when every value agrees (RFC 9112 section 6.3, item 5).
  const values = new Set(length.split(',').map((v) => v.trim()));
  const only = [...values][0]!;
  if (values.size !== 1 || !/^[0-9]{1,15}$/.test(only)) throw new HttpProtocolError(`bad Content-Length ${JSON.stringify(length)}`);
  return { status: code, headers, bodyLength: Number(only), reusable };
}
