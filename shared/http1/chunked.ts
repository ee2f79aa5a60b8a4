/**
 * A chunked response body (RFC 9112 section 7.1), decoded from pieces as the
 * socket delivers them. Registries send blobs with a Content-Length; chunked
 * answers are their small ones (error JSON, redirects), so the decoded bytes
 * are copies and the read buffer stays with its connection.
 */
import { HttpProtocolError } from './response-head.ts';

/** Longest chunk-size or trailer line accepted (extensions included). */
const MAX_LINE_BYTES = 4096;
const MAX_TRAILER_BYTES = 16 * 1024;

export class ChunkedDecoder {
  #state: 'size' | 'data' | 'data-end' | 'trailer' | 'done' = 'size';
  /** The line being read (size or trailer), without its CRLF. */
  #line = '';
  /** Data bytes left in the current chunk; in 'data-end', CRLF bytes left. */
  #remaining = 0;
  #trailerBytes = 0;

  /** Whether the last chunk and the trailer section have been read. */
  get done(): boolean {
    return this.#state === 'done';
  }

  /**
   * Decodes `data`; returns the body bytes in it (copies) and how many of its
   * bytes belong to the body (once done, the rest is not the body's).
   * Throws HttpProtocolError on anything RFC 9112 does not allow.
   */
  push(data: Uint8Array): { body: Buffer[]; used: number } {
    const body: Buffer[] = [];
    let at = 0;
    while (at < data.length && this.#state !== 'done') {
      if (this.#state === 'data') {
        const n = Math.min(this.#remaining, data.length - at);
        body.push(Buffer.from(data.subarray(at, at + n)));
        at += n;
        this.#remaining -= n;
        if (this.#remaining === 0) [this.#state, this.#remaining] = ['data-end', 2];
      } else if (this.#state === 'data-end') {
        if (data[at] !== (this.#remaining === 2 ? 0x0d : 0x0a)) throw new HttpProtocolError('chunk data not followed by CRLF');
        at++;
        if (--this.#remaining === 0) this.#state = 'size';
      } else {
        const lf = data.indexOf(0x0a, at);
        const end = lf < 0 ? data.length : lf + 1;
        this.#line += Buffer.from(data.subarray(at, end)).toString('latin1');
        if (this.#state === 'trailer') this.#trailerBytes += end - at;
        at = end;
        if (this.#line.length > MAX_LINE_BYTES || this.#trailerBytes > MAX_TRAILER_BYTES) throw new HttpProtocolError('chunked body line too long');
        if (lf >= 0) this.#endLine();
      }
    }
    return { body, used: at };
  }

  #endLine(): void {
    if (!this.#line.endsWith('\r\n')) throw new HttpProtocolError('chunked body line without CRLF');
    const line = this.#line.slice(0, -2);
    this.#line = '';
    if (this.#state === 'trailer') {
      if (line === '') this.#state = 'done';
      return;
    }
    // chunk-size [ chunk-ext ]: 1*HEXDIG, then `;name[=value]...` (ignored, as RFC 9112 allows).
    const size = /^([0-9A-Fa-f]{1,12})[ \t]*(?:;.*)?$/.exec(line);
    if (size === null) throw new HttpProtocolError(`bad chunk size line ${JSON.stringify(line.slice(0, 40))}`);
    this.#remaining = parseInt(size[1]!, 16);
    this.#state = this.#remaining === 0 ? 'trailer' : 'data';
  }
}
