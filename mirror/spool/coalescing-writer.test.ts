import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoalescingWriter, MAX_HELD_BYTES, type WritevTarget } from './coalescing-writer.ts';

/** A file in memory. Each write waits for `hold` (when set) and takes at most `maxPerWrite` bytes, or fails with `failure`. */
class FakeFile implements WritevTarget {
  disk = Buffer.alloc(0);
  /** Per writev: how many buffers, and where. */
  readonly calls: { buffers: number; position: number }[] = [];
  hold: Promise<void> | undefined;
  maxPerWrite = Infinity;
  failure: Error | undefined;

  async writev(buffers: Uint8Array[], position: number): Promise<{ bytesWritten: number }> {
    this.calls.push({ buffers: buffers.length, position });
    const data = Buffer.concat(buffers);
    await this.hold;
    if (this.failure !== undefined) throw this.failure;
    const taken = data.subarray(0, Math.min(data.length, this.maxPerWrite));
    if (this.disk.length < position + taken.length) this.disk = Buffer.concat([this.disk, Buffer.alloc(position + taken.length - this.disk.length)]);
    taken.copy(this.disk, position);
    return { bytesWritten: taken.length };
  }
}

/** No holding back: each chunk goes as soon as no write is in flight (what the tests of in-flight coalescing need). */
const AT_ONCE = { minWriteBytes: 0 };

describe('CoalescingWriter', function () {
  it('holds chunks until minWriteBytes of them wait, then writes them in one writev', async function () {
    const file = new FakeFile();
    const writer = new CoalescingWriter(file, () => {}, { minWriteBytes: 1000, maxHoldMs: 60_000 });
    const chunks = [randomBytes(300), randomBytes(300), randomBytes(300)];
    for (const chunk of chunks) await writer.write(chunk);
    await sleep(10);
    assert.deepEqual(file.calls, [], 'below minWriteBytes, within maxHoldMs: nothing written');
    const last = randomBytes(100);
    await writer.write(last);
    assert.deepEqual(file.calls, [{ buffers: 4, position: 0 }], 'the fourth chunk reached minWriteBytes: written at once');
    await writer.flush();
    assert.deepEqual(file.calls, [{ buffers: 4, position: 0 }]);
    assert.ok(file.disk.equals(Buffer.concat([...chunks, last])));
  });

  it('chunks that come while a write is in flight wait, once it ends, for minWriteBytes or maxHoldMs again', async function () {
    const file = new FakeFile();
    const held = Promise.withResolvers<void>();
    file.hold = held.promise;
    const writer = new CoalescingWriter(file, () => {}, { minWriteBytes: 1000, maxHoldMs: 30 });
    await writer.write(randomBytes(1000));
    assert.equal(file.calls.length, 1);
    await writer.write(randomBytes(10));
    await writer.write(randomBytes(10));
    file.hold = undefined;
    held.resolve();
    await sleep(10);
    assert.equal(file.calls.length, 1, 'the write ended; 20 bytes wait under minWriteBytes');
    await sleep(50);
    assert.deepEqual(file.calls[1], { buffers: 2, position: 1000 }, 'written once they waited maxHoldMs');
    assert.equal(writer.written, 1020);
  });

  it('discard() with chunks held under minWriteBytes: nothing is written, then or later', async function () {
    const file = new FakeFile();
    const writer = new CoalescingWriter(file, () => {}, { minWriteBytes: 1000, maxHoldMs: 10 });
    await writer.write(randomBytes(100));
    await writer.discard();
    await sleep(40);
    assert.deepEqual(file.calls, []);
  });

  it('never holds back more than MAX_HELD_BYTES, whatever minWriteBytes says', async function () {
    const file = new FakeFile();
    const writer = new CoalescingWriter(file, () => {}, { minWriteBytes: 4 * MAX_HELD_BYTES, maxHoldMs: 60_000 });
    const chunk = 256 * 1024;
    for (let i = 0; i < MAX_HELD_BYTES / chunk; i++) await writer.write(randomBytes(chunk));
    assert.deepEqual(file.calls, [{ buffers: MAX_HELD_BYTES / chunk, position: 0 }]);
    await writer.flush();
  });

  it('writes what is held once the first of it waited maxHoldMs, and flush() writes it at once', async function () {
    const file = new FakeFile();
    const writer = new CoalescingWriter(file, () => {}, { minWriteBytes: 1 << 20, maxHoldMs: 30 });
    await writer.write(randomBytes(100));
    await sleep(10);
    await writer.write(randomBytes(100));
    assert.deepEqual(file.calls, []);
    await sleep(60);
    assert.deepEqual(file.calls, [{ buffers: 2, position: 0 }], 'both, 30 ms after the first');
    assert.equal(writer.written, 200);
    await writer.write(randomBytes(50));
    await writer.flush();
    assert.deepEqual(file.calls[1], { buffers: 1, position: 200 }, 'flush does not wait for maxHoldMs');
    assert.equal(writer.written, 250);
  });

  it('writes a chunk at once when no write is in flight, and those that come meanwhile in one writev', async function () {
    const file = new FakeFile();
    const held = Promise.withResolvers<void>();
    file.hold = held.promise;
    const reported: number[] = [];
    const writer = new CoalescingWriter(file, (written) => reported.push(written), AT_ONCE);
    const chunks = [randomBytes(100), randomBytes(200), randomBytes(300), randomBytes(400)];
    for (const chunk of chunks) await writer.write(chunk);
    assert.deepEqual(file.calls, [{ buffers: 1, position: 0 }], 'the first chunk, alone');
    assert.equal(writer.written, 0);
    held.resolve();
    await writer.flush();
    assert.deepEqual(file.calls, [
      { buffers: 1, position: 0 },
      { buffers: 3, position: 100 },
    ]);
    assert.deepEqual(reported, [100, 1000]);
    assert.equal(writer.written, 1000);
    assert.ok(file.disk.equals(Buffer.concat(chunks)));
  });

  it(`stops taking chunks once more than ${MAX_HELD_BYTES / 1024 / 1024} MiB wait, until the write in flight ends`, async function () {
    const file = new FakeFile();
    let held = Promise.withResolvers<void>();
    file.hold = held.promise;
    const writer = new CoalescingWriter(file, () => {}, AT_ONCE);
    const chunk = 64 * 1024;
    const chunks = Array.from({ length: 3 * (MAX_HELD_BYTES / chunk) }, () => randomBytes(chunk));
    let taken = 0;
    const pumping = (async () => {
      for (const c of chunks) {
        taken++;
        await writer.write(c);
      }
      await writer.flush();
    })();
    // The first chunk is in flight; then the chunks held pass the bound and the last of them waits.
    const bound = 1 + MAX_HELD_BYTES / chunk + 1;
    await sleep(50);
    assert.equal(taken, bound);
    assert.deepEqual(file.calls, [{ buffers: 1, position: 0 }]);

    const first = held;
    held = Promise.withResolvers<void>();
    file.hold = held.promise;
    first.resolve();
    await sleep(50);
    assert.deepEqual(file.calls[1], { buffers: bound - 1, position: chunk }, 'all that waited, in one writev');
    assert.equal(taken, 2 * bound - 1, 'and again no more than the bound is taken');

    file.hold = undefined;
    held.resolve();
    await pumping;
    assert.ok(file.disk.equals(Buffer.concat(chunks)));
  });

  it('goes on from where a short write stopped', async function () {
    const file = new FakeFile();
    const held = Promise.withResolvers<void>();
    file.hold = held.promise;
    file.maxPerWrite = 1000;
    const reported: number[] = [];
    const writer = new CoalescingWriter(file, (written) => reported.push(written), AT_ONCE);
    const chunks = [randomBytes(700), randomBytes(700), randomBytes(700), Buffer.alloc(0)];
    for (const chunk of chunks) await writer.write(chunk);
    held.resolve();
    await writer.flush();
    // 700; then 700 and 300 of the third chunk; then the third's last 400.
    assert.deepEqual(
      file.calls.map((c) => c.position),
      [0, 700, 1700],
    );
    assert.deepEqual(reported, [700, 1700, 2100]);
    assert.ok(file.disk.equals(Buffer.concat(chunks)));
  });

  it('fails every later write and flush once a write fails', async function () {
    const file = new FakeFile();
    const held = Promise.withResolvers<void>();
    file.hold = held.promise;
    const writer = new CoalescingWriter(file, () => {}, AT_ONCE);
    await writer.write(randomBytes(10));
    await writer.write(randomBytes(10));
    file.failure = new Error('ENOSPC: no space left on device');
    held.resolve();
    await assert.rejects(writer.flush(), /ENOSPC/);
    await assert.rejects(writer.write(randomBytes(10)), /ENOSPC/);
    assert.equal(file.calls.length, 1, 'what was held is dropped, not written');
    assert.equal(writer.written, 0);
  });

  it('discard() drops what waits and resolves once the write in flight ends', async function () {
    const file = new FakeFile();
    const held = Promise.withResolvers<void>();
    file.hold = held.promise;
    const writer = new CoalescingWriter(file, () => {}, AT_ONCE);
    const first = randomBytes(10);
    await writer.write(first);
    await writer.write(randomBytes(10));
    let discarded = false;
    const discarding = writer.discard().then(() => (discarded = true));
    await sleep(10);
    assert.equal(discarded, false, 'a write is still in flight');
    held.resolve();
    await discarding;
    assert.equal(file.calls.length, 1);
    assert.ok(file.disk.equals(first));
  });
});
