import assert from 'node:assert/strict';
import { HttpProtocolError, parseResponseHead } from './response-head.ts';

describe('parseResponseHead', () => {
  const head = (...lines: string[]) => lines.join('\r\n');
  // The headers object has no prototype; compare its fields.
  const parse = (text: string, method: string) => {
    const parsed = parseResponseHead(text, method);
    return { ...parsed, headers: { ...parsed.headers } };
  };

  it('reads the status and the fields, names in lower case, repeated values joined', () => {
    const parsed = parse(head('HTTP/1.1 206 Partial Content', 'Content-Length: 10', 'X-A: 1', 'x-a:  2  ', 'Content-Range: bytes 0-9/20'), 'GET');
    assert.deepEqual(parsed, {
      status: 206,
      headers: { 'content-length': '10', 'x-a': '1, 2', 'content-range': 'bytes 0-9/20' },
      bodyLength: 10,
      reusable: true,
    });
  });

  it('knows the responses that have no body, whatever their Content-Length', () => {
    assert.equal(parseResponseHead(head('HTTP/1.1 200 OK', 'Content-Length: 1234'), 'HEAD').bodyLength, 0);
    assert.equal(parseResponseHead(head('HTTP/1.1 200 OK', 'Content-Length: 1234'), 'HEAD').headers['content-length'], '1234');
    assert.equal(parseResponseHead(head('HTTP/1.1 204 No Content'), 'GET').bodyLength, 0);
    assert.equal(parseResponseHead(head('HTTP/1.1 304 Not Modified'), 'GET').bodyLength, 0);
  });

  it('reads a body without Content-Length to the close, and does not reuse that connection', () => {
    assert.deepEqual(parse(head('HTTP/1.1 200 OK'), 'GET'), { status: 200, headers: {}, bodyLength: 'close', reusable: false });
  });

  it('reuses a connection unless the server says close or speaks HTTP/1.0 without keep-alive', () => {
    assert.equal(parseResponseHead(head('HTTP/1.1 200 OK', 'Content-Length: 0', 'Connection: close'), 'GET').reusable, false);
    assert.equal(parseResponseHead(head('HTTP/1.1 200 OK', 'Content-Length: 0', 'Connection: Keep-Alive'), 'GET').reusable, true);
    assert.equal(parseResponseHead(head('HTTP/1.0 200 OK', 'Content-Length: 0'), 'GET').reusable, false);
    assert.equal(parseResponseHead(head('HTTP/1.0 200 OK', 'Content-Length: 0', 'Connection: keep-alive'), 'GET').reusable, true);
  });

  it('keeps a field named like an object property as a plain field', () => {
    const parsed = parseResponseHead(head('HTTP/1.1 204 No Content', '__proto__: x', 'constructor: y'), 'GET');
    assert.equal(parsed.headers['__proto__'], 'x');
    assert.equal(parsed.headers['constructor'], 'y');
  });

  it('takes a chunked body, framed by its chunks', () => {
    assert.equal(parseResponseHead(head('HTTP/1.1 404 Not Found', 'Transfer-Encoding: Chunked'), 'GET').bodyLength, 'chunked');
  });

  it('accepts a repeated Content-Length only when the values agree', () => {
    assert.equal(parseResponseHead(head('HTTP/1.1 200 OK', 'Content-Length: 5', 'Content-Length: 5'), 'GET').bodyLength, 5);
    assert.throws(() => parseResponseHead(head('HTTP/1.1 200 OK', 'Content-Length: 5', 'Content-Length: 6'), 'GET'), HttpProtocolError);
  });

  for (const [what, text] of [
    ['a bad status line', head('HTTP/1.1 2000 OK')],
    ['another protocol', head('HTTP/2 200')],
    ['an interim response', head('HTTP/1.1 100 Continue')],
    ['a coding other than chunked', head('HTTP/1.1 200 OK', 'Transfer-Encoding: gzip, chunked')],
    ['chunked with a Content-Length', head('HTTP/1.1 200 OK', 'Transfer-Encoding: chunked', 'Content-Length: 5')],
    ['a negative Content-Length', head('HTTP/1.1 200 OK', 'Content-Length: -1')],
    ['a Content-Length that is no number', head('HTTP/1.1 200 OK', 'Content-Length: 12abc')],
    ['a folded line', head('HTTP/1.1 200 OK', 'X-A: 1', ' continued')],
    ['a field without a colon', head('HTTP/1.1 200 OK', 'nonsense')],
    ['a field with a space before its colon', head('HTTP/1.1 200 OK', 'Content-Length : 5')],
  ] as const) {
    it(`refuses ${what}`, () => {
      assert.throws(() => parseResponseHead(text, 'GET'), HttpProtocolError);
    });
  }
});
