import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChunkPool } from '../../shared/chunk-pool.ts';
import { digestOf, type Digest } from '../../shared/digest.ts';
import { ContentMismatchError, type Slice } from '../../shared/verify.ts';
import { SpoolEntryGoneError, type BlobSource, type SpoolObserver } from './entry.ts';
import { WINDOW_BYTES } from './recent-bytes.ts';
import { Spool, type SpoolInit } from './spool.ts';
import { replaceWritev } from './testing.ts';

const PIECE = 16 * 1024;

/**
 * A source over `bytes`, in `piece`-sized chunks (default PIECE). Records the
 * offset of every call; `failAt` makes a call fail (or end early) once it has
 * sent up to that byte; `gate` is awaited before every chunk, so a test can
 * hold the download.
 */
class TestSource {
  readonly offsets: number[] = [];
  /** Per call: the byte at which it fails, or undefined to go to the end. */
  failAt: (number | undefined)[] = [];
  /** Per call: end quietly instead of throwing at failAt. */
  endQuietly = false;
  gate: (position: number) => Promise<void> = () => Promise.resolve();
  readonly #bytes: Buffer;
  readonly #piece: number;

  constructor(bytes: Buffer, piece = PIECE) {
    this.#bytes = bytes;
    this.#piece = piece;
  }

  readonly source: BlobSource = (offset, signal) => {
    const call = this.offsets.push(offset) - 1;
    return Promise.resolve(this.#chunks(offset, this.failAt[call], signal));
  };

  async *#chunks(offset: number, failAt: number | undefined, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    const end = failAt ?? this.#bytes.length;
    for (let at = offset; at < end; at += this.#piece) {
      // As a real source does, give up when the spool closes, even while held at the gate.
      await Promise.race([this.gate(at), new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }))]);
      yield this.#bytes.subarray(at, Math.min(end, at + this.#piece));
    }
    if (failAt !== undefined && !this.endQuietly) throw new Error(`connection reset at ${failAt}`);
  }
}

/** A gate the test opens: every chunk from `from` on waits until open() is called. */
function gateAt(from: number): { gate: (position: number) => Promise<void>; open: () => void } {
  const opened = Promise.withResolvers<void>();
  return { gate: (position) => (position >= from ? opened.promise : Promise.resolve()), open: () => opened.resolve() };
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<{ bytes: Buffer; error?: Error }> {
  const chunks: Uint8Array[] = [];
  try {
    for await (const chunk of source) chunks.push(chunk);
  } catch (error) {
    return { bytes: Buffer.concat(chunks), error: error as Error };
  }
  return { bytes: Buffer.concat(chunks) };
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await sleep(5);
  }
  throw new Error(`timed out waiting for ${what}`);
}


interface FileRead {
  bytes: number;
  /** Whether `during()` held when the read was asked. */
  during: boolean;
}

type Read = (this: FileHandle, buffer: Uint8Array, offset: number, length: number, position: number) => Promise<{ bytesRead: number }>;

/** Records every read of a file (the entry's readers) until the returned restore is called. */
async function recordReads(scratch: string, during: () => boolean): Promise<{ reads: FileRead[]; restore: () => void }> {
  const probe = await open(join(scratch, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { read: Read };
  await probe.close();
  const real = proto.read;
  const reads: FileRead[] = [];
  proto.read = async function (buffer, offset, length, position) {
    const asked = during();
    const result = await real.call(this, buffer, offset, length, position);
    reads.push({ bytes: result.bytesRead, during: asked });
    return result;
  };
  return {
    reads,
    restore: () => {
      proto.read = real;
    },
  };
}

/** Bytes read from files while the download was in progress. */
const readDuring = (reads: FileRead[]) => reads.reduce((n, r) => n + (r.during ? r.bytes : 0), 0);

/** Reads `reader` into `got`, piece by piece; resolves with its error, if any. */
async function drain(reader: AsyncIterable<Uint8Array>, got: Uint8Array[]): Promise<Error | undefined> {
  try {
    for await (const chunk of reader) got.push(chunk);
  } catch (error) {
    return error as Error;
  }
  return undefined;
}

const length = (pieces: Uint8Array[]) => pieces.reduce((n, p) => n + p.length, 0);

/** Observer hooks recorded as lines, and the bytes served. */
function recorder(): SpoolObserver & { events: string[]; bytesServed: { partial: number; complete: number } } {
  const events: string[] = [];
  const bytesServed = { partial: 0, complete: 0 };
  return {
    events,
    bytesServed,
    started: (d, size) => events.push(`started ${d.hex.slice(0, 8)} ${size}`),
    joined: (d) => events.push(`joined ${d.hex.slice(0, 8)}`),
    refused: (d, size) => events.push(`refused ${d.hex.slice(0, 8)} ${size}`),
    resumed: (d, offset) => events.push(`resumed ${d.hex.slice(0, 8)} ${offset}`),
    finished: (d, state) => events.push(`finished ${d.hex.slice(0, 8)} ${state}`),
    served: (_d, bytes, partial) => {
      if (partial) bytesServed.partial += bytes;
      else bytesServed.complete += bytes;
    },
  };
}

describe('Spool', function () {
  let root: string;
  let dir: string;
  /** Undo what a test put in the place of FileHandle methods. */
  const restores: (() => void)[] = [];
  const spools: Spool[] = [];
  const openSpool = async (init: Partial<SpoolInit> = {}) => {
    const spool = await Spool.open({ dir, maxBytes: 64 * 1024 * 1024, lingerMs: 0, ...init });
    spools.push(spool);
    return spool;
  };
  const files = async () => (existsSync(dir) ? await readdir(dir) : []);

  const bytes = randomBytes(200 * 1024 + 123);
  const digest = digestOf(bytes);
  const short = (d: Digest) => d.hex.slice(0, 8);

  beforeEach(async function () {
    root = await mkdtemp(join(tmpdir(), 'shoal-spool-'));
    dir = join(root, 'spool');
  });
  afterEach(async function () {
    for (const restore of restores.splice(0)) restore();
    await Promise.all(spools.splice(0).map((s) => s.close()));
    await rm(root, { recursive: true, force: true });
  });

  describe('single flight', function () {
    it('shares one download between concurrent calls for a digest: the source is asked once', async function () {
      const observer = recorder();
      const spool = await openSpool({ observer });
      const first = new TestSource(bytes);
      const second = new TestSource(bytes);
      const a = spool.download(digest, bytes.length, first.source);
      const b = spool.download(digest, bytes.length, second.source);
      assert.ok(a !== undefined);
      assert.equal(b, a, 'the same entry');
      assert.equal(spool.get(digest), a);
      const [ra, rb] = await Promise.all([collect(a.reader()), collect(b.reader())]);
      assert.ok(ra.bytes.equals(bytes) && rb.bytes.equals(bytes));
      assert.deepEqual(first.offsets, [0]);
      assert.deepEqual(second.offsets, []);
      assert.deepEqual(observer.events, [`started ${short(digest)} ${bytes.length}`, `joined ${short(digest)}`, `finished ${short(digest)} complete`]);
    });

    it('starts a new download once the last one failed', async function () {
      const spool = await openSpool({ maxResumes: 0 });
      const failing = new TestSource(bytes);
      failing.failAt = [PIECE];
      const entry = spool.download(digest, bytes.length, failing.source)!;
      assert.equal(await entry.done, 'failed');
      assert.equal(spool.get(digest), undefined);
      const again = spool.download(digest, bytes.length, new TestSource(bytes).source)!;
      assert.notEqual(again, entry);
      assert.ok((await collect(again.reader())).bytes.equals(bytes));
    });
  });

  describe('readers', function () {
    it('gives readers started before, during and after the download exactly the bytes', async function () {
      const observer = recorder();
      const spool = await openSpool({ observer, lingerMs: 60_000 });
      const source = new TestSource(bytes);
      const half = gateAt(100 * 1024);
      source.gate = half.gate;
      const entry = spool.download(digest, bytes.length, source.source)!;
      const before = collect(entry.reader());
      const sliceBefore = collect(entry.reader({ start: 10, end: 50_000 }));
      await until(() => entry.written >= 100 * 1024, 'half the blob on disk');
      assert.equal(entry.state, 'downloading');
      const during = collect(entry.reader());
      const tail = collect(entry.reader({ start: 150_000, end: bytes.length - 1 }));
      half.open();
      assert.equal(await entry.done, 'complete');
      const after = await collect(entry.reader());
      const afterSlice = await collect(entry.reader({ start: 7, end: 7 }));

      for (const [name, got] of [
        ['before', await before],
        ['during', await during],
        ['after', after],
      ] as const) {
        assert.equal(got.error, undefined, name);
        assert.ok(got.bytes.equals(bytes), `${name}: ${got.bytes.length} bytes`);
      }
      assert.ok((await sliceBefore).bytes.equals(bytes.subarray(10, 50_001)));
      assert.ok((await tail).bytes.equals(bytes.subarray(150_000)));
      assert.ok(afterSlice.bytes.equals(bytes.subarray(7, 8)));
      assert.deepEqual(source.offsets, [0]);
      assert.ok(observer.bytesServed.partial > 100 * 1024, `served from the partial download: ${observer.bytesServed.partial}`);
      assert.ok(observer.bytesServed.complete >= bytes.length, `served after completion: ${observer.bytesServed.complete}`);
    });

    it('holds back the last byte a reader wants until the blob is verified', async function () {
      const spool = await openSpool();
      const source = new TestSource(bytes);
      const last = gateAt(bytes.length - 1 - ((bytes.length - 1) % PIECE));
      source.gate = last.gate;
      const entry = spool.download(digest, bytes.length, source.source)!;
      const early = entry.reader({ start: 0, end: 999 });
      const got: Uint8Array[] = [];
      const reading = (async () => {
        for await (const chunk of early) got.push(chunk);
      })();
      await until(() => entry.written > 1000 && Buffer.concat(got).length === 999, 'all but the last wanted byte');
      await sleep(20);
      assert.equal(Buffer.concat(got).length, 999, 'byte 999 is on disk but held back');
      last.open();
      await reading;
      assert.ok(Buffer.concat(got).equals(bytes.subarray(0, 1000)));
    });

    it('never gives a reader the last piece of a corrupt download, and removes its file', async function () {
      const spool = await openSpool();
      const corrupt = Buffer.from(bytes);
      corrupt[150_000] = corrupt[150_000]! ^ 0xff;
      const entry = spool.download(digest, bytes.length, new TestSource(corrupt).source)!;
      const whole = collect(entry.reader());
      const head = collect(entry.reader({ start: 0, end: 99 }));
      const results = [await whole, await head];
      for (const { error } of results) {
        assert.ok(error instanceof ContentMismatchError, String(error));
        assert.match(error.message, /content hashes to/);
      }
      assert.ok(results[0]!.bytes.length < bytes.length, 'the whole body was never passed on');
      assert.ok(results[1]!.bytes.length < 100, 'nor the whole of an early slice');
      assert.equal(entry.state, 'failed');
      await until(() => entry.state === 'failed' && spool.get(digest) === undefined, 'the entry to go');
      await until(() => spool.usedBytes === 0, 'its bytes to be released');
      await sleep(10);
      assert.deepEqual(await files(), []);
      // A reader asked for later still says why.
      const late = await collect(entry.reader());
      assert.ok(late.error instanceof ContentMismatchError);
    });

    it('fails a download that sends more bytes than its size, or fewer', async function () {
      const spool = await openSpool({ maxResumes: 1 });
      const longer = Buffer.concat([bytes, Buffer.from('x')]);
      const over = spool.download(digest, bytes.length, new TestSource(longer).source)!;
      assert.equal(await over.done, 'failed');
      assert.ok(over.error instanceof ContentMismatchError);
      assert.match(over.error.message, /more than the expected/);

      const shortSource = new TestSource(bytes);
      shortSource.failAt = [1000, 1000];
      shortSource.endQuietly = true;
      const under = spool.download(digest, bytes.length, shortSource.source)!;
      assert.equal(await under.done, 'failed');
      assert.match(under.error!.message, /source ended at byte 1000/);
      assert.deepEqual(shortSource.offsets, [0, 1000]);
    });

    it('serves an empty blob only once it is verified', async function () {
      const spool = await openSpool();
      const empty = Buffer.alloc(0);
      const entry = spool.download(digestOf(empty), 0, new TestSource(empty).source)!;
      assert.deepEqual(await collect(entry.reader()), { bytes: empty });
      const wrong = spool.download(digestOf(Buffer.from('not empty')), 0, new TestSource(empty).source)!;
      assert.ok((await collect(wrong.reader())).error instanceof ContentMismatchError);
    });

    it('refuses a slice outside the blob', async function () {
      const spool = await openSpool();
      const entry = spool.download(digest, bytes.length, new TestSource(bytes).source)!;
      for (const slice of [
        { start: 0, end: bytes.length },
        { start: -1, end: 3 },
        { start: 5, end: 3 },
      ] satisfies Slice[]) {
        assert.throws(() => entry.reader(slice), RangeError);
      }
      await entry.done;
    });
  });

  describe('reading at the head', function () {
    /** Holds every write until the returned release is called (or the test ends): the bytes are received, and none is on disk. */
    const holdWrites = async () => {
      const released = Promise.withResolvers<void>();
      restores.push(() => released.resolve());
      restores.push(
        await replaceWritev(root, (real) =>
          async function (buffers, position) {
            await released.promise;
            return real.call(this, buffers, position);
          },
        ),
      );
      return () => released.resolve();
    };

    it('gives readers at the head the bytes received, from memory: no file read until the download ends', async function () {
      const spool = await openSpool();
      const source = new TestSource(bytes);
      const half = 6 * PIECE;
      const held = gateAt(half);
      source.gate = held.gate;
      // The spy looks at the entry only when a file is read, by then it exists.
      const { reads, restore } = await recordReads(root, () => entry.state === 'downloading');
      restores.push(restore);
      const entry = spool.download(digest, bytes.length, source.source)!;
      const got = [[], [], [], []] as Uint8Array[][];
      const sliceGot: Uint8Array[] = [];
      const readers = [...got.map((pieces) => drain(entry.reader(), pieces)), drain(entry.reader({ start: PIECE + 5, end: 150_000 }), sliceGot)];
      await until(() => got.every((pieces) => length(pieces) === half), 'every reader to have what was received');
      assert.equal(entry.state, 'downloading');
      for (const piece of got.flat()) assert.notEqual(piece.buffer, bytes.buffer, "a copy: the source's buffer is free to go back to its pool");
      held.open();
      assert.equal(await entry.done, 'complete');
      assert.deepEqual(await Promise.all(readers), [undefined, undefined, undefined, undefined, undefined]);
      for (const pieces of got) assert.ok(Buffer.concat(pieces).equals(bytes));
      assert.ok(Buffer.concat(sliceGot).equals(bytes.subarray(PIECE + 5, 150_001)));
      assert.equal(readDuring(reads), 0, `${readDuring(reads)} bytes read from the file during the download`);
    });

    it('wakes a reader at the head for a run of bytes, not for every small chunk, and soon for a lone one', async function () {
      const blob = randomBytes(4 * 1024 * 1024);
      const spool = await openSpool();
      // 1 KiB chunks, then a pause at 3 MiB + 1 KiB until the reader has that last lone chunk.
      const source = new TestSource(blob, 1024);
      const lone = 3 * 1024 * 1024 + 1024;
      const got: Uint8Array[] = [];
      source.gate = (position) => (position === lone ? until(() => length(got) === lone, 'the reader to get a lone chunk without more bytes behind it') : Promise.resolve());
      const entry = spool.download(digestOf(blob), blob.length, source.source)!;
      assert.equal(await drain(entry.reader(), got), undefined);
      assert.ok(Buffer.concat(got).equals(blob));
      // 4096 chunks from the source; a reader woken for each would write each.
      assert.ok(got.length < 400, `${got.length} pieces for ${blob.length / 1024} chunks`);
    });

    it('copies a pooled chunk and gives it back at once: a source that reuses its buffers changes nothing readers get', async function () {
      const pool = new ChunkPool(PIECE, 2);
      const used = new Set<ArrayBufferLike>();
      let handedOut = 0;
      const source: BlobSource = () =>
        Promise.resolve(
          (async function* () {
            for (let at = 0; at < bytes.length; at += PIECE) {
              await Promise.resolve();
              const buffer = pool.take();
              used.add(buffer.buffer);
              const n = bytes.copy(buffer, 0, at, Math.min(bytes.length, at + PIECE));
              handedOut++;
              yield buffer.subarray(0, n);
              // Scribbles on what it handed out, as a socket reading into the buffer again would.
              buffer.fill(0xee);
            }
          })(),
        );
      const spool = await openSpool();
      const entry = spool.download(digest, bytes.length, source)!;
      const got = [[], []] as Uint8Array[][];
      const readers = got.map((pieces) => drain(entry.reader(), pieces));
      assert.equal(await entry.done, 'complete');
      assert.deepEqual(await Promise.all(readers), [undefined, undefined]);
      for (const pieces of got) assert.ok(Buffer.concat(pieces).equals(bytes));
      assert.ok(handedOut > 4 && used.size === 1, `${used.size} buffers for ${handedOut} chunks: each came back before the next was taken`);
    });

    it('gives a reader behind the window the file up to it, then the window, and keeps the window within its bound', async function () {
      const piece = 64 * 1024;
      const blob = randomBytes(WINDOW_BYTES + 4 * 1024 * 1024 + 77);
      const received = WINDOW_BYTES + 2 * 1024 * 1024;
      const spool = await openSpool();
      const source = new TestSource(blob, piece);
      const held = gateAt(received);
      source.gate = held.gate;
      // The spy looks at the entry only when a file is read, by then it exists.
      const { reads, restore } = await recordReads(root, () => entry.state === 'downloading');
      restores.push(restore);
      const entry = spool.download(digestOf(blob), blob.length, source.source)!;
      await until(() => entry.written === received, 'the bytes before the gate on disk');
      const got: Uint8Array[] = [];
      const reading = drain(entry.reader(), got);
      await until(() => length(got) === received, 'the late reader to catch up');
      const fromFile = readDuring(reads);
      // Bytes older than the bound are no longer in memory; the file is read only up to the window (within a read).
      assert.ok(fromFile >= received - WINDOW_BYTES, `${fromFile} bytes from the file`);
      assert.ok(fromFile < received - WINDOW_BYTES + 1024 * 1024, `${fromFile} bytes from the file`);
      held.open();
      assert.equal(await entry.done, 'complete');
      assert.equal(await reading, undefined);
      assert.ok(Buffer.concat(got).equals(blob));
      assert.equal(readDuring(reads), fromFile, 'at the head again: no more file reads');
    });

    it('shares one memory budget among many downloads: each keeps a smaller window', async function () {
      const piece = 64 * 1024;
      const received = 6 * 1024 * 1024;
      const spool = await openSpool({ maxBytes: 1 << 30 });
      // 16 downloads at once: 64 MiB / 16 = 4 MiB each, below the 8 MiB a lone download keeps.
      const downloads = Array.from({ length: 16 }, () => {
        const blob = randomBytes(received + piece);
        const source = new TestSource(blob, piece);
        const held = gateAt(received);
        source.gate = held.gate;
        return { blob, held, entry: spool.download(digestOf(blob), blob.length, source.source)! };
      });
      const first = downloads[0]!;
      const { reads, restore } = await recordReads(root, () => first.entry.state === 'downloading');
      restores.push(restore);
      await until(() => downloads.every((d) => d.entry.written === received), 'every download up to its gate on disk');
      const got: Uint8Array[] = [];
      const reading = drain(first.entry.reader(), got);
      await until(() => length(got) === received, 'the late reader to catch up');
      const fromFile = readDuring(reads);
      assert.ok(fromFile >= received - 4 * 1024 * 1024, `${fromFile} bytes from the file: the window kept more than its share`);
      for (const d of downloads) d.held.open();
      await Promise.all(downloads.map((d) => d.entry.done));
      assert.equal(await reading, undefined);
      assert.ok(Buffer.concat(got).equals(first.blob));
    });

    it('holds back the last byte while every byte is in memory, none on disk, until the blob is verified', async function () {
      const release = await holdWrites();
      const spool = await openSpool();
      const entry = spool.download(digest, bytes.length, new TestSource(bytes).source)!;
      const whole: Uint8Array[] = [];
      const tail: Uint8Array[] = [];
      const readers = [drain(entry.reader(), whole), drain(entry.reader({ start: bytes.length - 10, end: bytes.length - 1 }), tail)];
      await until(() => length(whole) === bytes.length - 1 && length(tail) === 9, 'all but the last byte');
      await sleep(20);
      assert.equal(entry.written, 0);
      assert.equal(entry.state, 'downloading');
      assert.deepEqual([length(whole), length(tail)], [bytes.length - 1, 9], 'the last byte is received but held back');
      release();
      assert.deepEqual(await Promise.all(readers), [undefined, undefined]);
      assert.ok(Buffer.concat(whole).equals(bytes));
      assert.ok(Buffer.concat(tail).equals(bytes.subarray(-10)));
    });

    it('fails every reader of a corrupt download received whole, none having had the last byte', async function () {
      const release = await holdWrites();
      const spool = await openSpool();
      const corrupt = Buffer.from(bytes);
      corrupt[150_000] = corrupt[150_000]! ^ 0xff;
      const entry = spool.download(digest, bytes.length, new TestSource(corrupt).source)!;
      const got = [[], [], [], []] as Uint8Array[][];
      const readers = got.map((pieces) => drain(entry.reader(), pieces));
      await until(() => got.every((pieces) => length(pieces) === bytes.length - 1), 'all but the last byte');
      release();
      for (const error of await Promise.all(readers)) assert.ok(error instanceof ContentMismatchError, String(error));
      for (const pieces of got) assert.ok(Buffer.concat(pieces).equals(corrupt.subarray(0, -1)));
      assert.equal(entry.state, 'failed');
    });
  });

  describe('writing', function () {
    it('coalesces a fast source of small chunks into few writes, byte for byte, with a reader reading along', async function () {
      const blob = randomBytes(2 * 1024 * 1024 + 5);
      const piece = 1024;
      const writes: number[] = [];
      restores.push(
        await replaceWritev(root, (real) =>
          function (buffers, position) {
            writes.push(buffers.reduce((n, b) => n + b.length, 0));
            return real.call(this, buffers, position);
          },
        ),
      );
      const spool = await openSpool();
      const entry = spool.download(digestOf(blob), blob.length, new TestSource(blob, piece).source)!;
      const reader = collect(entry.reader());
      assert.equal(await entry.done, 'complete');
      const got = await reader;
      assert.equal(got.error, undefined);
      assert.ok(got.bytes.equals(blob));
      const chunks = Math.ceil(blob.length / piece);
      assert.ok(writes.length <= chunks / 20, `${writes.length} writes for ${chunks} chunks`);
      assert.equal(
        writes.reduce((n, w) => n + w, 0),
        blob.length,
        'every byte written once',
      );
    });

    it('fails the download when a write fails, without asking the source again', async function () {
      restores.push(await replaceWritev(root, () => () => Promise.reject(new Error('ENOSPC: no space left on device'))));
      const spool = await openSpool();
      const source = new TestSource(bytes);
      const entry = spool.download(digest, bytes.length, source.source)!;
      const reader = collect(entry.reader());
      assert.equal(await entry.done, 'failed');
      assert.match(entry.error!.message, /ENOSPC/);
      assert.match(String((await reader).error), /ENOSPC/);
      assert.deepEqual(source.offsets, [0]);
      await until(() => readdirSyncLength(dir) === 0, 'the file to go');
    });
  });

  describe('resuming', function () {
    it('asks the source again from the byte where it failed, and verifies across the pieces', async function () {
      const observer = recorder();
      const spool = await openSpool({ observer });
      const source = new TestSource(bytes);
      source.failAt = [3 * PIECE + 100, 5 * PIECE];
      const entry = spool.download(digest, bytes.length, source.source)!;
      const got = await collect(entry.reader());
      assert.equal(got.error, undefined);
      assert.ok(got.bytes.equals(bytes));
      assert.deepEqual(source.offsets, [0, 3 * PIECE + 100, 5 * PIECE]);
      assert.deepEqual(
        observer.events.filter((e) => e.startsWith('resumed')),
        [`resumed ${short(digest)} ${3 * PIECE + 100}`, `resumed ${short(digest)} ${5 * PIECE}`],
      );
    });

    it('resumes from the bytes received, once they are on disk, when the source fails with chunks still unwritten', async function () {
      // Nothing reaches the disk before the source fails (the chunks are under the writer's minWriteBytes, and the hook holds writes too): the resume must flush them first.
      const failed = Promise.withResolvers<void>();
      const writes: number[] = [];
      restores.push(
        await replaceWritev(root, (real) =>
          async function (buffers, position) {
            writes.push(buffers.length);
            await failed.promise;
            return real.call(this, buffers, position);
          },
        ),
      );
      const spool = await openSpool();
      const source = new TestSource(bytes);
      const failAt = 3 * PIECE + 100;
      source.failAt = [failAt];
      const asked: { offset: number; onDisk: number }[] = [];
      const entry = spool.download(digest, bytes.length, async (offset, signal) => {
        asked.push({ offset, onDisk: entry.written });
        const chunks = await source.source(offset, signal);
        return (async function* () {
          try {
            yield* chunks;
          } catch (err) {
            failed.resolve();
            throw err;
          }
        })();
      })!;
      const got = await collect(entry.reader());
      assert.equal(got.error, undefined);
      assert.ok(got.bytes.equals(bytes));
      assert.deepEqual(asked, [
        { offset: 0, onDisk: 0 },
        { offset: failAt, onDisk: failAt },
      ]);
      assert.equal(writes[0], 4, 'the four chunks received before the failure, held, in one write when the resume flushed them');
    });

    it('resumes a source that cannot even be asked, within the limit, then fails with its error', async function () {
      const spool = await openSpool({ maxResumes: 2 });
      let calls = 0;
      const entry = spool.download(digest, bytes.length, () => {
        calls++;
        return Promise.reject(new Error('ECONNREFUSED'));
      })!;
      const reader = collect(entry.reader());
      assert.equal(await entry.done, 'failed');
      assert.equal(calls, 3, 'the first call and two resumes');
      assert.match(String((await reader).error), /ECONNREFUSED/);
    });

    it('does not resume a failure the spool is told is final', async function () {
      const spool = await openSpool({ isResumable: (err) => !/404/.test(String(err)) });
      const source = new TestSource(bytes);
      let calls = 0;
      const entry = spool.download(digest, bytes.length, async (offset, signal) => {
        if (calls++ > 0) throw new Error('404 not found');
        source.failAt = [PIECE];
        return source.source(offset, signal);
      })!;
      assert.equal(await entry.done, 'failed');
      assert.equal(calls, 2);
      assert.match(entry.error!.message, /404/);
    });
  });

  describe('cleanup', function () {
    it('removes the file once the download is done and its last reader has finished', async function () {
      const spool = await openSpool();
      const source = new TestSource(bytes);
      const held = gateAt(PIECE);
      source.gate = held.gate;
      const entry = spool.download(digest, bytes.length, source.source)!;
      const reader = entry.reader();
      const stopped = entry.reader();
      await until(() => entry.written === PIECE, 'the first piece');
      assert.equal((await files()).length, 1);
      assert.match((await files())[0]!, new RegExp(`^${digest.hex}\\.[0-9]+\\.partial$`));
      stopped.close();
      held.open();
      await entry.done;
      assert.equal((await files()).length, 1, 'a reader is still open');
      assert.equal(spool.get(digest), entry);
      assert.ok((await collect(reader)).bytes.equals(bytes));
      await until(() => spool.get(digest) === undefined, 'the entry to go');
      await until(() => readdirSyncLength(dir) === 0, 'the file to go');
      assert.equal(spool.usedBytes, 0);
      assert.throws(() => entry.reader(), SpoolEntryGoneError);
    });

    it('keeps a complete file for the linger, for readers who come a little later', async function () {
      const spool = await openSpool({ lingerMs: 200 });
      const entry = spool.download(digest, bytes.length, new TestSource(bytes).source)!;
      assert.ok((await collect(entry.reader())).bytes.equals(bytes));
      await sleep(100);
      assert.equal(spool.get(digest), entry);
      const late = entry.reader();
      await sleep(200);
      assert.equal(spool.get(digest), entry, 'an open reader holds it past the linger');
      assert.ok((await collect(late)).bytes.equals(bytes));
      await until(() => spool.get(digest) === undefined, 'the linger to end');
      await until(() => readdirSyncLength(dir) === 0, 'the file to go');
    });

    it('empties the directory on open: nothing survives a restart', async function () {
      await mkdir(join(dir, 'nested'), { recursive: true });
      await writeFile(join(dir, `${digest.hex}.1.partial`), bytes.subarray(0, 1000));
      await writeFile(join(dir, 'nested', 'x'), 'x');
      const spool = await openSpool();
      assert.deepEqual(await files(), []);
      assert.equal(spool.get(digest), undefined);
      const entry = spool.download(digest, bytes.length, new TestSource(bytes).source)!;
      assert.ok((await collect(entry.reader())).bytes.equals(bytes));
    });

    it('close() fails downloads and their readers, and removes the directory', async function () {
      const spool = await openSpool();
      const source = new TestSource(bytes);
      source.gate = gateAt(PIECE).gate;
      const entry = spool.download(digest, bytes.length, source.source)!;
      const got: Uint8Array[] = [];
      const reader = drain(entry.reader(), got);
      await until(() => entry.written === PIECE && length(got) === PIECE, 'the first piece on disk and read');
      await spool.close();
      assert.equal(entry.state, 'failed');
      assert.match(entry.error!.message, /the spool closed/);
      assert.match(String(await reader), /the spool closed/);
      assert.equal(length(got), PIECE);
      assert.equal(existsSync(dir), false);
      assert.throws(() => spool.download(digest, bytes.length, source.source), /closed/);
    });
  });

  describe('bounds', function () {
    it('refuses a download that would take the spool past maxBytes, never evicting bytes in flight', async function () {
      const observer = recorder();
      const spool = await openSpool({ maxBytes: 300 * 1024, lingerMs: 60_000, observer });
      const a = new TestSource(bytes);
      const held = gateAt(PIECE);
      a.gate = held.gate;
      const first = spool.download(digest, bytes.length, a.source)!;
      assert.equal(spool.usedBytes, bytes.length);
      const other = randomBytes(150 * 1024);
      const otherDigest = digestOf(other);
      assert.equal(spool.download(otherDigest, other.length, new TestSource(other).source), undefined, 'in flight: not evicted');
      assert.equal(spool.download(digest, bytes.length, new TestSource(bytes).source), first, 'joining needs no room');
      held.open();
      await first.done;
      const reader = first.reader();
      assert.equal(spool.download(otherDigest, other.length, new TestSource(other).source), undefined, 'being read: not evicted');
      assert.ok((await collect(reader)).bytes.equals(bytes));
      // Complete, unread, lingering: evicted for room.
      const second = spool.download(otherDigest, other.length, new TestSource(other).source)!;
      assert.ok(second !== undefined);
      assert.equal(spool.get(digest), undefined);
      assert.equal(spool.usedBytes, other.length);
      assert.ok((await collect(second.reader())).bytes.equals(other));
      assert.equal(spool.download(digestOf(Buffer.from('huge')), 300 * 1024 + 1, new TestSource(bytes).source), undefined, 'larger than the spool');
      assert.deepEqual(
        observer.events.filter((e) => e.startsWith('refused')),
        [`refused ${short(otherDigest)} ${other.length}`, `refused ${short(otherDigest)} ${other.length}`, `refused ${short(digestOf(Buffer.from('huge')))} ${300 * 1024 + 1}`],
      );
    });
  });

  describe('waiting', function () {
    it('a reader waiting on a slow source sleeps until bytes come (no busy loop)', async function () {
      const spool = await openSpool();
      const source = new TestSource(bytes);
      const held = gateAt(PIECE);
      source.gate = held.gate;
      const entry = spool.download(digest, bytes.length, source.source)!;
      const readers = [collect(entry.reader()), collect(entry.reader()), collect(entry.reader({ start: 5, end: 6 }))];
      await until(() => entry.written === PIECE, 'the first piece');
      await sleep(20);
      const cpu = process.cpuUsage();
      const started = performance.now();
      await sleep(500);
      const used = process.cpuUsage(cpu);
      const ms = (used.user + used.system) / 1000;
      assert.ok(ms < 100, `${ms.toFixed(1)} ms of CPU in ${(performance.now() - started).toFixed(0)} ms of waiting`);
      held.open();
      for (const result of await Promise.all(readers.slice(0, 2))) assert.ok(result.bytes.equals(bytes));
      assert.ok((await readers[2]!).bytes.equals(bytes.subarray(5, 7)));
    });

    it('close() wakes a waiting reader and ends it', async function () {
      const spool = await openSpool();
      const source = new TestSource(bytes);
      const held = gateAt(PIECE);
      source.gate = held.gate;
      const entry = spool.download(digest, bytes.length, source.source)!;
      const reader = entry.reader();
      const got: Uint8Array[] = [];
      const reading = (async () => {
        for await (const chunk of reader) got.push(chunk);
      })();
      await until(() => Buffer.concat(got).length === PIECE, 'the first piece read');
      reader.close();
      await reading;
      assert.equal(Buffer.concat(got).length, PIECE);
      held.open();
      await entry.done;
    });
  });
});

/** Sync: for until()'s synchronous checks. */
function readdirSyncLength(path: string): number {
  return existsSync(path) ? readdirSync(path).length : 0;
}
