/**
 * Pooled memory is reused only once nobody reads it any more. Every pool
 * buffer is poisoned when taken, the source scribbles on each chunk once it
 * has handed it over (as a socket reading into its buffer again would), the
 * disk is slow (writes stay in flight), and readers of random slices stream
 * through streamToResponse to HTTP clients that read slowly (their writes stay
 * in flight too). A buffer reused too early shows as a wrong byte at a client.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChunkPool } from '../../shared/chunk-pool.ts';
import { digestOf } from '../../shared/digest.ts';
import { streamToResponse } from '../../shared/stream-response.ts';
import { poisonPoolTakes } from '../../shared/testing.ts';
import type { BlobSource, SpoolEntry } from './entry.ts';
import { WINDOW_BYTES } from './recent-bytes.ts';
import { Spool } from './spool.ts';
import { replaceWritev } from './testing.ts';

/** Serves `entry` at `/?start=S&end=E` through streamToResponse. */
async function serve(entry: SpoolEntry): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://spool');
    const reader = entry.reader({ start: Number(url.searchParams.get('start')), end: Number(url.searchParams.get('end')) });
    streamToResponse(res, reader)
      .catch(() => res.destroy())
      .finally(() => reader.close());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** A client that reads slowly: what it got, until the end or a cut (nothing, when cut before the answer). */
async function slowGet(port: number, start: number, end: number): Promise<Buffer> {
  let res: IncomingMessage;
  try {
    res = await new Promise<IncomingMessage>((resolve, reject) => get({ host: '127.0.0.1', port, path: `/?start=${start}&end=${end}`, agent: false }, resolve).on('error', reject));
  } catch {
    return Buffer.alloc(0);
  }
  const parts: Buffer[] = [];
  try {
    for await (const chunk of res) {
      parts.push(chunk as Buffer);
      if (parts.length % 8 === 0) await sleep(randomInt(0, 5));
    }
  } catch {
    // Cut short: what came must still be right.
  }
  return Buffer.concat(parts);
}

describe('Spool: pooled memory under readers', function () {
  this.timeout(60_000);
  let root: string;
  const undo: (() => void)[] = [];

  beforeEach(async function () {
    root = await mkdtemp(join(tmpdir(), 'shoal-pooled-'));
    undo.push(poisonPoolTakes());
    undo.push(await replaceWritev(root, (real) => async function (buffers, position) {
      await sleep(randomInt(0, 4));
      return real.call(this, buffers, position);
    }));
  });

  afterEach(async function () {
    for (const restore of undo.splice(0)) restore();
    await rm(root, { recursive: true, force: true });
  });

  /** A blob from pooled chunks of random sizes, broken `breaks` times past 3 MB; from byte `holdAt` on, nothing more until the spool closes. */
  function pooledSource(blob: Buffer, breaks: number, holdAt = Infinity): BlobSource {
    const pool = new ChunkPool(64 * 1024, 2);
    let left = breaks;
    return (offset, signal) =>
      Promise.resolve(
        (async function* () {
          for (let at = offset; at < blob.length; ) {
            await new Promise((resolve) => setImmediate(resolve));
            if (at >= holdAt) await new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }));
            if (left > 0 && at > offset + 3_000_000 && randomInt(0, 50) === 0) {
              left--;
              throw new Error('connection reset');
            }
            const buffer = pool.take();
            const n = blob.copy(buffer, 0, at, Math.min(blob.length, at + randomInt(1, buffer.length + 1)));
            at += n;
            yield buffer.subarray(0, n);
            buffer.fill(0xab);
          }
        })(),
      );
  }

  const randomSlice = (size: number) => {
    const start = randomInt(0, 3) === 0 ? 0 : randomInt(0, size - 1);
    return { start, end: randomInt(0, 2) === 0 ? size - 1 : randomInt(start, size) };
  };

  it('serves every reader the right bytes, through resumes, at the head, behind the window and from the file', async function () {
    const blob = randomBytes(WINDOW_BYTES + 4 * 1024 * 1024 + 4321);
    const spool = await Spool.open({ dir: join(root, 'spool'), maxBytes: 64 * 1024 * 1024, lingerMs: 60_000, isResumable: () => true });
    try {
      const entry = spool.download(digestOf(blob), blob.length, pooledSource(blob, 2))!;
      const { server, port } = await serve(entry);
      try {
        const read = async () => {
          await sleep(randomInt(0, 300));
          const { start, end } = randomSlice(blob.length);
          const got = await slowGet(port, start, end);
          assert.ok(got.equals(blob.subarray(start, end + 1)), `bytes ${start}-${end}: ${got.length} bytes, not the blob's`);
        };
        await Promise.all([entry.done, ...Array.from({ length: 8 }, read)]);
        assert.equal(entry.state, 'complete');
        // After the download: file reads into their own pool.
        await Promise.all(Array.from({ length: 3 }, read));
      } finally {
        server.closeAllConnections();
        server.close();
      }
    } finally {
      await spool.close();
    }
  });

  it('gives readers only right bytes when the spool closes under them', async function () {
    const blob = randomBytes(WINDOW_BYTES + 2 * 1024 * 1024);
    const spool = await Spool.open({ dir: join(root, 'spool'), maxBytes: 64 * 1024 * 1024, lingerMs: 0, isResumable: () => true });
    const holdAt = blob.length - 1024 * 1024;
    const entry = spool.download(digestOf(blob), blob.length, pooledSource(blob, 0, holdAt))!;
    const { server, port } = await serve(entry);
    try {
      const slices = Array.from({ length: 8 }, () => randomSlice(blob.length));
      const reads = slices.map(({ start, end }) => slowGet(port, start, end));
      // The download can never complete: it waits, with the readers' writes in flight, for the close.
      while (entry.written < holdAt) await sleep(5);
      await sleep(randomInt(0, 50));
      await spool.close();
      const got = await Promise.all(reads);
      assert.equal(entry.state, 'failed');
      assert.ok(got.some((bytes) => bytes.length > 0), 'some reader had bytes before the close');
      got.forEach((bytes, i) => assert.ok(bytes.equals(blob.subarray(slices[i]!.start, slices[i]!.start + bytes.length)), `reader ${i}: a wrong byte`));
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
