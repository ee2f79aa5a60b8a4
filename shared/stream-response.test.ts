import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { streamToResponse } from './stream-response.ts';

const CHUNK = Buffer.alloc(64 * 1024, 1);

describe('streamToResponse', function () {
  let server: Server | undefined;
  afterEach(async function () {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve())));
    server = undefined;
  });

  /** Serves `total` bytes (endless when undefined) through streamToResponse; says how it ended and whether the source was closed. */
  async function serve(stalledAfterMs: number, total?: number) {
    const ended = Promise.withResolvers<{ error: Error | undefined; sourceClosed: boolean; ms: number }>();
    server = createServer((_req, res) => {
      let sourceClosed = false;
      async function* chunks() {
        try {
          for (let sent = 0; total === undefined || sent < total; sent += CHUNK.length) {
            await Promise.resolve();
            yield CHUNK;
          }
        } finally {
          sourceClosed = true;
        }
      }
      const started = performance.now();
      if (total !== undefined) res.setHeader('content-length', total);
      streamToResponse(res, chunks(), stalledAfterMs).then(
        () => ended.resolve({ error: undefined, sourceClosed, ms: performance.now() - started }),
        (error: Error) => ended.resolve({ error, sourceClosed, ms: performance.now() - started }),
      );
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
    socket.write('GET / HTTP/1.1\r\nHost: test\r\n\r\n');
    return { socket, ended: ended.promise };
  }

  it('drops a client that stops reading, and closes the source', async function () {
    const { socket, ended } = await serve(150);
    socket.pause();
    const { error, sourceClosed, ms } = await ended;
    assert.match(error?.message ?? '', /took nothing for 150 ms/);
    assert.ok(sourceClosed, 'the source was closed');
    assert.ok(ms >= 150, `dropped after ${ms.toFixed(0)} ms`);
    const closed = await new Promise<boolean>((resolve) => {
      socket.once('close', () => resolve(true));
      socket.resume();
    });
    assert.ok(closed, 'the connection was closed');
  });

  it('keeps a client that takes each chunk within the limit, however long the whole body takes', async function () {
    // A response whose socket is always full: every write waits for 'drain', which comes 60 ms later.
    const res = Object.assign(new EventEmitter(), {
      destroyed: false,
      ended: false,
      write(_chunk: Uint8Array, _done: (err?: Error | null) => void) {
        setTimeout(() => res.emit('drain'), 60);
        return false;
      },
      end() {
        res.ended = true;
      },
      destroy() {
        res.destroyed = true;
        res.emit('close');
      },
    });
    async function* chunks() {
      for (let i = 0; i < 10; i++) {
        await Promise.resolve();
        yield CHUNK;
      }
    }
    const started = performance.now();
    await streamToResponse(res as unknown as ServerResponse, chunks(), 150);
    const ms = performance.now() - started;
    assert.ok(res.ended && !res.destroyed, 'ended, not dropped');
    assert.ok(ms > 450, `ten waits of 60 ms took ${ms.toFixed(0)} ms, more than three times the limit`);
  });
});
