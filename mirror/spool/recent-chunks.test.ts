import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { RecentChunks } from './recent-chunks.ts';

describe('RecentChunks', function () {
  it('gives views of the chunks themselves, never past a chunk, and nothing outside the window', function () {
    const chunks = [randomBytes(100), randomBytes(0), randomBytes(50), randomBytes(200)];
    const recent = new RecentChunks(() => 1000);
    for (const chunk of chunks) recent.push(chunk);
    const blob = Buffer.concat(chunks);
    assert.equal(recent.end, 350);
    for (const [position, max, length] of [
      [0, 1000, 100],
      [99, 1000, 1],
      [100, 1000, 50],
      [120, 10, 10],
      [150, 1000, 200],
      [349, 1, 1],
    ]) {
      const view = recent.at(position!, max!)!;
      assert.equal(view.length, length, `at ${position}`);
      assert.ok(Buffer.from(view.buffer, view.byteOffset, view.length).equals(blob.subarray(position, position! + length!)));
    }
    assert.equal(recent.at(120, 10)!.buffer, chunks[2]!.buffer, 'no copy');
    assert.equal(recent.at(350, 1), undefined);
    recent.clear();
    assert.equal(recent.at(0, 1), undefined);
    assert.deepEqual([recent.start, recent.end], [350, 350]);
  });

  it('drops the oldest chunks once over its bound, but only those below the bytes written', function () {
    const recent = new RecentChunks(() => 300);
    for (let i = 0; i < 10; i++) recent.push(randomBytes(100));
    recent.trim(0);
    assert.deepEqual([recent.start, recent.end], [0, 1000], 'nothing on disk: everything stays');
    recent.trim(450);
    assert.equal(recent.start, 400, 'chunks wholly on disk go, the one written in part stays');
    recent.trim(1000);
    assert.equal(recent.start, 700, 'down to its bound');
    assert.equal(recent.at(699, 1), undefined);
    assert.ok(recent.at(700, 1) !== undefined);
    recent.push(randomBytes(250));
    recent.push(randomBytes(250));
    recent.trim(1000);
    assert.deepEqual([recent.start, recent.end], [1000, 1500], 'over its bound by what is not yet written, and only by that');
    recent.trim(1500);
    assert.equal(recent.start, 1250);
  });
});
