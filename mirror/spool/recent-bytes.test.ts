import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ChunkPool, released } from '../../shared/chunk-pool.ts';
import { RecentBytes } from './recent-bytes.ts';

describe('RecentBytes', function () {
  it('copies the bytes in, and gives views that span chunks but never a segment, and nothing outside the window', function () {
    const pool = new ChunkPool(256, 8);
    const chunks = [randomBytes(100), randomBytes(0), randomBytes(50), randomBytes(200)];
    const recent = new RecentBytes(pool, () => 1000);
    const copies = chunks.flatMap((chunk) => recent.push(chunk));
    const blob = Buffer.concat(chunks);
    assert.ok(Buffer.concat(copies).equals(blob), 'the copies are the bytes, in order');
    assert.deepEqual(
      copies.map((c) => c.length),
      [100, 50, 106, 94],
      'a chunk that straddles a segment is copied in two',
    );
    chunks[3]!.fill(0);
    assert.equal(recent.end, 350);
    for (const [position, max, length] of [
      [0, 1000, 256],
      [99, 1000, 157],
      [120, 10, 10],
      [255, 1000, 1],
      [256, 1000, 94],
      [349, 1, 1],
    ]) {
      const view = recent.at(position!, max!)!;
      assert.equal(view.length, length, `at ${position}`);
      assert.ok(Buffer.from(view.buffer, view.byteOffset, view.length).equals(blob.subarray(position, position! + length!)), `bytes at ${position}, though the source's buffer changed`);
    }
    assert.equal(recent.at(350, 1), undefined);
    recent.clear();
    assert.equal(recent.at(0, 1), undefined);
    assert.deepEqual([recent.start, recent.end], [350, 350]);
  });

  it('lets go of the oldest segments once over its bound, but only whole ones below the bytes written', function () {
    const recent = new RecentBytes(new ChunkPool(100, 8), () => 300);
    for (let i = 0; i < 10; i++) recent.push(randomBytes(100));
    recent.trim(0);
    assert.deepEqual([recent.start, recent.end], [0, 1000], 'nothing on disk: everything stays');
    recent.trim(450);
    assert.equal(recent.start, 400, 'segments wholly on disk go, the one written in part stays');
    recent.trim(1000);
    assert.equal(recent.start, 700, 'down to its bound');
    assert.equal(recent.at(699, 1), undefined);
    assert.ok(recent.at(700, 1) !== undefined);
    recent.push(randomBytes(250));
    recent.push(randomBytes(250));
    recent.trim(1000);
    assert.deepEqual([recent.start, recent.end], [1000, 1500], 'over its bound by what is not yet written, and only by that');
    recent.trim(1500);
    assert.equal(recent.start, 1200, 'down to its bound again');
    const tiny = new RecentBytes(new ChunkPool(100, 8), () => 0);
    tiny.push(randomBytes(150));
    tiny.trim(150);
    assert.equal(tiny.start, 100, 'the segment still being filled stays, whatever the bound');
    assert.ok(tiny.at(149, 1) !== undefined);
  });

  it('reuses a segment only once every view a reader took of it is released', function () {
    const pool = new ChunkPool(100, 32);
    const recent = new RecentBytes(pool, () => 100);
    const first = randomBytes(100);
    recent.push(first);
    const held = recent.at(10, 50)!;
    for (let i = 0; i < 5; i++) {
      recent.push(randomBytes(100));
      recent.trim(recent.end);
    }
    assert.ok(recent.start > 0, 'the first segment left the window');
    assert.ok(Buffer.from(held).equals(first.subarray(10, 60)), 'a view still read keeps its bytes');
    const reused = () => {
      const taken = Array.from({ length: 8 }, () => pool.take());
      const hit = taken.some((b) => b.buffer === held.buffer);
      for (const b of taken) released(b);
      return hit;
    };
    assert.equal(reused(), false, 'not handed out while held');
    released(held);
    assert.equal(reused(), true, 'handed out again once released');
  });
});
