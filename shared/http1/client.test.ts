import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { released } from '../chunk-pool.ts';
import { close, listen } from '../http-listen.ts';
import { Http1Client, HttpProtocolError } from './client.ts';
import { requestHead } from './connection.ts';

const signal = () => AbortSignal.timeout(10_000);

async function drain(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/**
 * A raw TCP server: `answer` gets each request (one read of the socket: the
 * client's requests are small) with its place on the connection, from 0.
 */
async function rawServer(answer: (socket: Socket, request: number) => void): Promise<{ server: TcpServer; port: number; stop: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createTcpServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    let requests = 0;
    socket.on('data', () => answer(socket, requests++));
  });
  const port = await listen(server, { host: '127.0.0.1', port: 0 });
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return { server, port, stop };
}

describe('Http1Client', () => {
  const BIG = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < BIG.length; i += 4) BIG.writeUInt32LE(i, i);
  let server: Server;
  let port: number;
  let connections = 0;
  const stalled: ServerResponse[] = [];

  before(async () => {
    server = createServer((req, res) => {
      switch (req.url) {
        case '/big':
          res.setHeader('Content-Length', BIG.length);
          res.end(req.method === 'HEAD' ? undefined : BIG);
          return;
        case '/small':
          res.setHeader('Content-Length', 5);
          res.end('hello');
          return;
        case '/half':
          res.writeHead(200, { 'Content-Length': 1000 });
          res.write(Buffer.alloc(500, 1));
          setTimeout(() => res.destroy(), 20);
          return;
        case '/stall':
          res.writeHead(200, { 'Content-Length': 1000 });
          res.write(Buffer.alloc(10));
          stalled.push(res);
          return;
        default:
          res.writeHead(404, { 'Content-Length': 0 }).end();
      }
    });
    server.on('connection', () => connections++);
    server.keepAliveTimeout = 60_000;
    port = await listen(server, { host: '127.0.0.1', port: 0 });
  });
  after(async () => {
    for (const res of stalled) res.destroy();
    await close(server, 0);
  });

  it('streams a large body whole, in views of a few reused read buffers', async () => {
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const buffers = new Set<ArrayBufferLike>();
      for (let round = 0; round < 3; round++) {
        const res = await client.request('127.0.0.1', port, { method: 'GET', path: '/big', signal: signal() });
        assert.equal(res.status, 200);
        assert.equal(res.headers['content-length'], String(BIG.length));
        const hash = createHash('sha256');
        let bytes = 0;
        for await (const chunk of res.body) {
          hash.update(chunk);
          bytes += chunk.length;
          buffers.add(chunk.buffer);
          // What the response writer does once a chunk is on the wire.
          released(chunk);
        }
        assert.equal(bytes, BIG.length);
        assert.equal(hash.digest('hex'), createHash('sha256').update(BIG).digest('hex'));
      }
      // 24 MiB went through: without reuse that is hundreds of buffers; small copied pieces add a few.
      assert.ok(buffers.size < 40, `${buffers.size} distinct buffers`);
    } finally {
      client.close();
    }
  });

  it('keeps the connection for the next request, HEAD included', async () => {
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const before = connections;
      const head = await client.request('127.0.0.1', port, { method: 'HEAD', path: '/big', signal: signal() });
      assert.equal(head.status, 200);
      assert.equal(head.headers['content-length'], String(BIG.length));
      assert.equal((await drain(head.body)).length, 0);
      for (let i = 0; i < 3; i++) {
        const res = await client.request('127.0.0.1', port, { method: 'GET', path: '/small', signal: signal() });
        assert.equal((await drain(res.body)).toString(), 'hello');
      }
      const missing = await client.request('127.0.0.1', port, { method: 'GET', path: '/nothing', signal: signal() });
      assert.equal(missing.status, 404);
      assert.equal(connections - before, 1);
    } finally {
      client.close();
    }
  });

  it('names the Host without the default port of its scheme, as fetch does', () => {
    const req = { method: 'GET', path: '/v2/', signal: signal() } as const;
    assert.match(requestHead('storage.example', 443, req, true), /\r\nHost: storage\.example\r\n/);
    assert.match(requestHead('storage.example', 80, req), /\r\nHost: storage\.example\r\n/);
    assert.match(requestHead('storage.example', 443, req), /\r\nHost: storage\.example:443\r\n/);
    assert.match(requestHead('::1', 5000, req), /\r\nHost: \[::1\]:5000\r\n/);
  });

  it('sends its headers and the Host', async () => {
    let seen: Record<string, unknown> = {};
    const echo = createServer((req, res) => {
      seen = req.headers;
      res.writeHead(204).end();
    });
    const echoPort = await listen(echo, { host: '127.0.0.1', port: 0 });
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const res = await client.request('127.0.0.1', echoPort, { method: 'GET', path: '/x?y=1', headers: { Range: 'bytes=5-', 'Shoal-Peer-Request': '1' }, signal: signal() });
      assert.equal(res.status, 204);
      assert.equal(seen.host, `127.0.0.1:${echoPort}`);
      assert.equal(seen.range, 'bytes=5-');
      assert.equal(seen['shoal-peer-request'], '1');
    } finally {
      client.close();
      await close(echo, 0);
    }
  });

  it('sends again on a new connection when the server had closed the kept one', async () => {
    // Each connection answers one request and drops the next unanswered: a server that closed it while idle.
    const { server: raw, port: rawPort, stop } = await rawServer((s, request) => (request === 0 ? s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok') : s.destroy()));
    let opened = 0;
    raw.on('connection', () => opened++);
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() });
        assert.equal((await drain(res.body)).toString(), 'ok');
      }
      assert.equal(opened, 3);
    } finally {
      client.close();
      await stop();
    }
  });

  it('goes on after the server closed a kept connection while it sat idle', async () => {
    const shortLived = createServer((_req, res) => res.writeHead(200, { 'Content-Length': 2 }).end('ok'));
    let opened = 0;
    shortLived.on('connection', (s: Socket) => {
      opened++;
      // Closed by the server soon after its response, before the client asks again.
      setTimeout(() => s.end(), 30);
    });
    const shortPort = await listen(shortLived, { host: '127.0.0.1', port: 0 });
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      for (let i = 0; i < 2; i++) {
        const res = await client.request('127.0.0.1', shortPort, { method: 'GET', path: '/', signal: signal() });
        assert.equal((await drain(res.body)).toString(), 'ok');
        await sleep(100);
      }
      assert.equal(opened, 2);
    } finally {
      client.close();
      await close(shortLived, 0);
    }
  });

  it('fails a body the server cuts short', async () => {
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const res = await client.request('127.0.0.1', port, { method: 'GET', path: '/half', signal: signal() });
      let got = 0;
      await assert.rejects(async () => {
        for await (const chunk of res.body) got += chunk.length;
      });
      assert.equal(got, 500);
    } finally {
      client.close();
    }
  });

  it('stops reading while its consumer does not, so the server is held back', async () => {
    let res: ServerResponse | undefined;
    const huge = createServer((_req, r) => {
      res = r;
      r.writeHead(200, { 'Content-Length': 256 * 1024 * 1024 });
      const piece = Buffer.alloc(1024 * 1024);
      const pump = () => {
        while (r.write(piece));
      };
      r.on('drain', pump);
      pump();
    });
    const hugePort = await listen(huge, { host: '127.0.0.1', port: 0 });
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const reply = await client.request('127.0.0.1', hugePort, { method: 'GET', path: '/', signal: signal() });
      const chunks = reply.body[Symbol.asyncIterator]();
      await chunks.next();
      await sleep(300);
      // Socket buffers on both sides plus the client's 1 MiB queue: a few MiB, never the 256 MiB.
      const sent = res!.socket!.bytesWritten;
      assert.ok(sent < 64 * 1024 * 1024, `server got ${sent} bytes out`);
      reply.discard();
    } finally {
      client.close();
      res?.destroy();
      await close(huge, 0);
    }
  });

  it('fails a body whose consumer is gone when it is discarded, and opens a new connection next', async () => {
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const before = connections;
      const res = await client.request('127.0.0.1', port, { method: 'GET', path: '/stall', signal: signal() });
      res.discard();
      await assert.rejects(drain(res.body));
      const next = await client.request('127.0.0.1', port, { method: 'GET', path: '/small', signal: signal() });
      assert.equal((await drain(next.body)).toString(), 'hello');
      assert.equal(connections - before, 2);
    } finally {
      client.close();
    }
  });

  it('fails a body when its signal aborts', async () => {
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const abort = new AbortController();
      const res = await client.request('127.0.0.1', port, { method: 'GET', path: '/stall', signal: abort.signal });
      setTimeout(() => abort.abort(), 20);
      await assert.rejects(drain(res.body), { name: 'AbortError' });
    } finally {
      client.close();
    }
  });

  it('reads a body without Content-Length to the close', async () => {
    const { port: rawPort, stop } = await rawServer((s) => s.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end'));
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const res = await client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() });
      assert.equal((await drain(res.body)).toString(), 'until the end');
    } finally {
      client.close();
      await stop();
    }
  });

  it('takes the whole body and drops the connection when the server sends more than it said', async () => {
    let opened = 0;
    const { server: raw, port: rawPort, stop } = await rawServer((s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcXYZ'));
    raw.on('connection', () => opened++);
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      for (let i = 0; i < 2; i++) {
        const res = await client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() });
        assert.equal((await drain(res.body)).toString(), 'abc');
      }
      assert.equal(opened, 2);
    } finally {
      client.close();
      await stop();
    }
  });

  for (const [what, reply] of [
    ['a coding other than chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n'],
    ['a garbled status line', 'HTTP/1.1 OK\r\n\r\n'],
    ['a head over 16 KiB', `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`],
  ] as const) {
    it(`refuses ${what} with an HttpProtocolError`, async () => {
      const { port: rawPort, stop } = await rawServer((s) => s.write(reply));
      const client = new Http1Client({ idleTimeoutMs: 5000 });
      try {
        await assert.rejects(client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() }), HttpProtocolError);
      } finally {
        client.close();
        await stop();
      }
    });
  }

  it('reads a head that arrives a byte at a time', async () => {
    const reply = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody');
    const { port: rawPort, stop } = await rawServer((s) => {
    void (async () => {
      for (const byte of reply) {
        s.write(Buffer.of(byte));
        await sleep(1);
      }
    })();
    });
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const res = await client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() });
      assert.equal(res.status, 200);
      assert.equal((await drain(res.body)).toString(), 'body');
    } finally {
      client.close();
      await stop();
    }
  });

  it('refuses a path or header that would break the request framing, and keeps its connection', async () => {
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const before = connections;
      const ok = await client.request('127.0.0.1', port, { method: 'GET', path: '/small', signal: signal() });
      await drain(ok.body);
      await assert.rejects(client.request('127.0.0.1', port, { method: 'GET', path: '/a b', signal: signal() }), /invalid request path/);
      await assert.rejects(client.request('127.0.0.1', port, { method: 'GET', path: '/small', headers: { 'X-A': 'a\r\nX-B: b' }, signal: signal() }), /invalid request header/);
      const again = await client.request('127.0.0.1', port, { method: 'GET', path: '/small', signal: signal() });
      assert.equal((await drain(again.body)).toString(), 'hello');
      assert.equal(connections - before, 1);
    } finally {
      client.close();
    }
  });

  describe('a chunked body', () => {
    const chunked = 'HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n';

    it('is decoded however the bytes arrive, and leaves the connection fit for the next request', async () => {
      const { port: rawPort, stop } = await rawServer((s, request) => {
        if (request > 0) return void s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        // One byte at a time: every state of the decoder meets the end of a read.
        const bytes = Buffer.from(chunked);
        let i = 0;
        const next = () => {
          if (i < bytes.length) s.write(bytes.subarray(i, ++i), () => setImmediate(next));
        };
        next();
      });
      const client = new Http1Client({ idleTimeoutMs: 5000 });
      try {
        const res = await client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() });
        assert.equal(res.status, 404);
        assert.equal((await drain(res.body)).toString(), 'hello, world');
        const again = await client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() });
        assert.equal((await drain(again.body)).toString(), 'ok', 'the same connection, answered in turn');
      } finally {
        client.close();
        await stop();
      }
    });

    for (const [what, reply, error] of [
      ['cut short by the server closing', chunked.slice(0, chunked.indexOf('hello') + 3), /closed the connection/],
      ['with a bad chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n', HttpProtocolError],
      ['with data not followed by CRLF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n', HttpProtocolError],
      ['followed by bytes past its end', `${chunked}HTTP/1.1 200 OK\r\n`, HttpProtocolError],
    ] as const) {
      it(`fails ${what}`, async () => {
        const { port: rawPort, stop } = await rawServer((s) => s.end(reply));
        const client = new Http1Client({ idleTimeoutMs: 5000 });
        try {
          const res = await client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() });
          if (what.startsWith('followed')) {
            // The body itself is whole; the stray bytes fail the connection, never the next exchange.
            assert.equal((await drain(res.body)).toString(), 'hello, world');
          } else {
            await assert.rejects(drain(res.body), error);
          }
        } finally {
          client.close();
          await stop();
        }
      });
    }
  });

  it('does not send a request again when a kept connection answers it with a protocol error', async () => {
    let requests = 0;
    const { port: rawPort, stop } = await rawServer((s, request) => {
      requests++;
      s.write(request === 0 ? 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok' : 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n');
    });
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const first = await client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() });
      assert.equal((await drain(first.body)).toString(), 'ok');
      await assert.rejects(client.request('127.0.0.1', rawPort, { method: 'GET', path: '/', signal: signal() }), HttpProtocolError);
      assert.equal(requests, 2);
    } finally {
      client.close();
      await stop();
    }
  });

  it('closes the connection of a body its consumer stopped reading', async () => {
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    try {
      const before = connections;
      const closed = new Promise<void>((resolve) => server.once('request', (req) => req.socket.once('close', () => resolve())));
      const res = await client.request('127.0.0.1', port, { method: 'GET', path: '/big', signal: signal() });
      for await (const chunk of res.body) {
        assert.ok(chunk.length > 0);
        break;
      }
      // At once, not whenever something else times the connection out.
      const late = sleep(1000).then(() => 'still open');
      assert.equal(await Promise.race([closed.then(() => 'closed'), late]), 'closed');
      const next = await client.request('127.0.0.1', port, { method: 'GET', path: '/small', signal: signal() });
      assert.equal((await drain(next.body)).toString(), 'hello');
      assert.equal(connections - before, 2);
    } finally {
      client.close();
    }
  });

  it('refuses requests once closed', async () => {
    const client = new Http1Client({ idleTimeoutMs: 5000 });
    client.close();
    await assert.rejects(client.request('127.0.0.1', port, { method: 'GET', path: '/small', signal: signal() }), /closed/);
  });
});
