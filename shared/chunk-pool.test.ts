import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ChunkPool, released, retain } from './chunk-pool.ts';
import { streamToResponse } from './stream-response.ts';

describe('ChunkPool', function () {
  it('hands a released buffer out again, whichever view of it was released', function () {
    const pool = new ChunkPool(1024, 2);
    const first = pool.take();
    released(first.subarray(10, 20));
    assert.equal(pool.take().buffer, first.buffer);
  });

  it('allocates when nothing was released, and keeps at most `keep` free buffers', function () {
    const pool = new ChunkPool(1024, 1);
    const [a, b] = [pool.take(), pool.take()];
    assert.notEqual(a.buffer, b.buffer);
    released(a);
    released(a);
    released(b);
    const again = [pool.take(), pool.take()];
    assert.equal(again.filter((c) => c.buffer === a.buffer || c.buffer === b.buffer).length, 1, 'one kept, one new');
  });

  it('takes a buffer back only once every holder has released it', function () {
    const pool = new ChunkPool(1024, 4);
    const first = pool.take();
    const shared = retain(first.subarray(0, 10));
    retain(first.subarray(500));
    released(first);
    released(shared);
    assert.notEqual(pool.take().buffer, first.buffer, 'one holder left');
    released(first.subarray(500));
    assert.equal(pool.take().buffer, first.buffer, 'all released');
  });

  it('refuses to share a buffer nobody holds', function () {
    const pool = new ChunkPool(1024, 4);
    const buffer = pool.take();
    released(buffer);
    assert.throws(() => retain(buffer), /nobody holds/);
    assert.doesNotThrow(() => retain(Buffer.from('plain')));
  });

  it('ignores bytes that are not from a pool', function () {
    assert.doesNotThrow(() => released(Buffer.from('plain')));
  });

  describe('with streamToResponse', function () {
    let server: Server;
    afterEach(async function () {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it('gets each chunk back once the response has written it, and the client receives every byte', async function () {
      const pool = new ChunkPool(64 * 1024, 4);
      const seen = new Set<ArrayBufferLike>();
      async function* chunks(): AsyncGenerator<Uint8Array> {
        for (let i = 0; i < 64; i++) {
          await Promise.resolve();
          const buffer = pool.take();
          seen.add(buffer.buffer);
          buffer.fill(i);
          yield buffer;
        }
      }
      server = createServer((_req, res) => {
        res.setHeader('Content-Length', 64 * 64 * 1024);
        void streamToResponse(res, chunks());
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const body = await new Promise<Buffer>((resolve, reject) => {
        request({ host: '127.0.0.1', port: (server.address() as AddressInfo).port }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () => resolve(Buffer.concat(parts)));
          res.on('error', reject);
        }).end();
      });
      assert.equal(body.length, 64 * 64 * 1024);
      for (let i = 0; i < 64; i++) assert.equal(body[i * 64 * 1024 + 1000], i, `chunk ${i} intact`);
      assert.ok(seen.size < 64, `${seen.size} buffers for 64 chunks: written chunks came back`);
    });
  });
});
