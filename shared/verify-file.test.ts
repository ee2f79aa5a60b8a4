import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { digestOf } from './digest.ts';
import { FileHashPool } from './file-hash-pool.ts';
import { ContentMismatchError } from './verify.ts';
import { verifiedFileSlice } from './verify-file.ts';

describe('verifiedFileSlice', () => {
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const digest = digestOf(data);
  let dir: string;
  let pool: FileHashPool;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-verify-'));
    pool = new FileHashPool({ workers: 2 });
  });
  after(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function collect(path: string, slice?: { start: number; end: number }) {
    const out: Uint8Array[] = [];
    try {
      for await (const c of verifiedFileSlice({ pool, path, digest, size: data.length, slice, chunkBytes: 256 * 1024 })) out.push(c);
      return { bytes: Buffer.concat(out) };
    } catch (error) {
      return { bytes: Buffer.concat(out), error: error as Error };
    }
  }

  it('streams the whole file and ranges of it, checked by a worker', async () => {
    const path = join(dir, 'good');
    await writeFile(path, data);
    assert.deepEqual((await collect(path)).bytes, data);
    const slice = { start: 1000, end: 2 * 1024 * 1024 };
    const part = await collect(path, slice);
    assert.equal(part.error, undefined);
    assert.deepEqual(part.bytes, data.subarray(slice.start, slice.end + 1));
  });

  it('holds back the last piece of a corrupt file and fails', async () => {
    const bad = Buffer.from(data);
    bad.writeUInt8(bad.readUInt8(bad.length - 100) ^ 0xff, bad.length - 100);
    const path = join(dir, 'bad');
    await writeFile(path, bad);
    const whole = await collect(path);
    assert.ok(whole.error instanceof ContentMismatchError, String(whole.error));
    assert.ok(whole.bytes.length < data.length);
    const head = await collect(path, { start: 0, end: 99 });
    assert.ok(head.error instanceof ContentMismatchError);
    assert.equal(head.bytes.length, 0, 'a one-piece slice is held back entirely');
  });

  it('fails on a file of the wrong size before sending anything', async () => {
    const path = join(dir, 'short');
    await writeFile(path, data.subarray(1));
    const res = await collect(path);
    assert.ok(res.error instanceof ContentMismatchError);
    assert.equal(res.bytes.length, 0);
  });

  it('lets a reader stop early, and the pool keeps working after', async () => {
    const path = join(dir, 'early');
    await writeFile(path, data);
    for await (const _ of verifiedFileSlice({ pool, path, digest, size: data.length, chunkBytes: 64 * 1024 })) break;
    assert.deepEqual((await collect(path)).bytes, data);
  });
});
