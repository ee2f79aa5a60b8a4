/**
 * The containerd store's reads from content files: a directory laid out as
 * containerd's (`blobs/sha256/<hex>`), no containerd (those reads never reach
 * its socket). The end-to-end tests read through a real containerd.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { digestOf, type Digest } from '../../../shared/digest.ts';
import { silentLogger } from '../../../shared/log.ts';
import { ContentMismatchError, type Slice } from '../../../shared/verify.ts';
import type { CheckUse, FileChecksInit } from './file-checks.ts';
import { ContainerdStore } from './store.ts';

const MiB = 1 << 20;

describe('ContainerdStore reading content files', function () {
  let dir: string;
  let stores: ContainerdStore[];
  let uses: CheckUse[];

  beforeEach(async function () {
    dir = await mkdtemp(join(tmpdir(), 'containerd-store-'));
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    stores = [];
    uses = [];
  });
  afterEach(async function () {
    for (const store of stores) await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function openStore(checks?: FileChecksInit): Promise<ContainerdStore> {
    const store = await ContainerdStore.open({ socket: join(dir, 'no-containerd.sock'), namespace: 'test', contentPath: dir, logger: silentLogger, checks, onCheck: (use) => uses.push(use) });
    stores.push(store);
    return store;
  }

  const pathOf = (digest: Digest): string => join(dir, 'blobs', 'sha256', digest.hex);

  async function blob(bytes: Buffer): Promise<Digest> {
    const digest = digestOf(bytes);
    await writeFile(pathOf(digest), bytes);
    return digest;
  }

  async function collect(chunks: AsyncIterable<Uint8Array>): Promise<{ bytes: Buffer; error?: unknown }> {
    const out: Uint8Array[] = [];
    try {
      for await (const chunk of chunks) out.push(Buffer.from(chunk));
    } catch (error) {
      return { bytes: Buffer.concat(out), error };
    }
    return { bytes: Buffer.concat(out) };
  }

  it('sends the wanted slice of a file, across its read chunks; the next read of it is remembered', async function () {
    const bytes = randomBytes(3 * MiB + 123);
    const digest = await blob(bytes);
    const store = await openStore();
    const slices: (Slice | undefined)[] = [undefined, { start: MiB - 5, end: 2 * MiB + 5 }, { start: bytes.length - 1, end: bytes.length - 1 }];
    for (const slice of slices) {
      const { bytes: got, error } = await collect(store.read(digest, bytes.length, slice));
      assert.equal(error, undefined);
      assert.deepEqual(got, bytes.subarray(slice?.start ?? 0, (slice?.end ?? bytes.length - 1) + 1));
    }
    assert.deepEqual(uses, ['hashed', 'remembered', 'remembered']);
  });

  it('a file that is not its digest never completes: its last piece is never sent', async function () {
    const bytes = randomBytes(3 * MiB);
    const digest = digestOf(bytes);
    bytes[bytes.length - 1]! ^= 0xff;
    await writeFile(pathOf(digest), bytes);
    const { bytes: got, error } = await collect((await openStore()).read(digest, bytes.length));
    assert.ok(error instanceof ContentMismatchError);
    assert.ok(got.length < bytes.length);
  });

  it('a file written into during a read fails the read, even with its check remembered', async function () {
    const bytes = randomBytes(3 * MiB);
    const digest = await blob(bytes);
    const store = await openStore();
    assert.equal((await collect(store.read(digest, bytes.length))).error, undefined);
    const reading = store.read(digest, bytes.length)[Symbol.asyncIterator]();
    const sent = [Buffer.from((await reading.next()).value)];
    // In place, as bit rot or a stray writer would: same inode and size.
    const file = await open(pathOf(digest), 'r+');
    await file.write(Buffer.from([bytes[bytes.length - 1]! ^ 0xff]), 0, 1, bytes.length - 1);
    await file.close();
    const { bytes: rest, error } = await collect({ [Symbol.asyncIterator]: () => reading });
    assert.deepEqual(uses, ['hashed', 'remembered']);
    assert.ok(error instanceof ContentMismatchError, String(error));
    assert.ok(sent[0]!.length + rest.length < bytes.length);
  });

  it('a file that took the path before its check opened it: the read checks its own file and completes', async function () {
    const bytes = randomBytes(2 * MiB);
    const digest = await blob(bytes);
    const other = join(dir, 'other');
    // The check opens the path only after containerd replaced the blob with a new file (new inode, same bytes).
    const store = await openStore({
      open: async (path) => {
        await writeFile(other, bytes);
        await rename(other, path);
        return open(path, 'r');
      },
    });
    const { bytes: got, error } = await collect(store.read(digest, bytes.length));
    assert.equal(error, undefined);
    assert.deepEqual(got, bytes);
    assert.deepEqual(uses, ['hashed']);
  });

  it('a file of another size than asked for fails before any byte', async function () {
    const bytes = randomBytes(1000);
    const digest = await blob(bytes);
    const { bytes: got, error } = await collect((await openStore()).read(digest, 1001));
    assert.ok(error instanceof ContentMismatchError);
    assert.equal(got.length, 0);
  });

  it('closes its files when the client leaves mid-body, and when the check fails', async function () {
    const openFds = (): number => readdirSync('/proc/self/fd').length;
    const good = randomBytes(3 * MiB);
    const digest = await blob(good);
    const store = await openStore({ rememberMs: 0 });
    const before = openFds();
    const reading = store.read(digest, good.length)[Symbol.asyncIterator]();
    await reading.next();
    assert.ok(openFds() > before);
    await reading.return(undefined);
    const bad = randomBytes(3 * MiB);
    const wrong = digestOf(randomBytes(16));
    await writeFile(pathOf(wrong), bad);
    assert.ok((await collect(store.read(wrong, bad.length))).error instanceof ContentMismatchError);
    // The first read's check may still be running on its own handle: it closes once it ends.
    await waitFor(() => openFds() === before);
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(condition());
}
