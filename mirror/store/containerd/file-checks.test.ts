import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { digestOf, type Digest } from '../../../shared/digest.ts';
import { ContentMismatchError } from '../../../shared/verify.ts';
import { FileChecks } from './file-checks.ts';

describe('FileChecks', function () {
  let dir: string;
  let clock: number;
  const now = () => clock;

  beforeEach(async function () {
    dir = await mkdtemp(join(tmpdir(), 'file-checks-'));
    clock = 1_000_000;
  });
  afterEach(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  async function blob(name: string, bytes: Buffer): Promise<{ path: string; digest: Digest }> {
    const path = join(dir, name);
    await writeFile(path, bytes);
    return { path, digest: digestOf(bytes) };
  }

  it('hashes a file in chunks, the next read in flight while one is hashed: the digest of the whole', async function () {
    const checks = new FileChecks({ chunkBytes: 7, now });
    // 1000 is not a multiple of 7: the last read is short, then one reads nothing.
    const { path, digest } = await blob('a', randomBytes(1000));
    const check = checks.check(path, await stat(path), digest);
    assert.equal(check.use, 'hashed');
    await check.done;
  });

  it('reads that overlap a check join it; reads after it passed are remembered until rememberMs', async function () {
    const checks = new FileChecks({ rememberMs: 1000, now });
    const { path, digest } = await blob('a', randomBytes(300_000));
    const stats = await stat(path);
    const first = checks.check(path, stats, digest);
    const second = checks.check(path, stats, digest);
    assert.deepEqual([first.use, second.use], ['hashed', 'joined']);
    assert.equal(second.done, first.done);
    await first.done;
    clock += 999;
    assert.equal(checks.check(path, stats, digest).use, 'remembered');
    clock += 1;
    const again = checks.check(path, stats, digest);
    assert.equal(again.use, 'hashed');
    await again.done;
  });

  it('a file that does not hash to its digest fails with a ContentMismatchError, and is checked again next time', async function () {
    const checks = new FileChecks({ now });
    const { path } = await blob('a', randomBytes(5000));
    const wrong = digestOf(randomBytes(5000));
    const stats = await stat(path);
    const first = checks.check(path, stats, wrong);
    await assert.rejects(first.done, (err: unknown) => err instanceof ContentMismatchError && /hashes to sha256:/.test(err.message));
    const second = checks.check(path, stats, wrong);
    assert.equal(second.use, 'hashed');
    await assert.rejects(second.done, ContentMismatchError);
  });

  it('a new file under the same digest is checked anew; a file that took the path since the read opened it is refused', async function () {
    const checks = new FileChecks({ now });
    const bytes = randomBytes(4096);
    const { path, digest } = await blob('a', bytes);
    const old = await stat(path);
    await checks.check(path, old, digest).done;
    // containerd deletes a blob and a later pull writes it again: same name and bytes, another inode.
    const { path: other } = await blob('b', bytes);
    await rename(other, path);
    const fresh = await stat(path);
    assert.notEqual(fresh.ino, old.ino);
    const check = checks.check(path, fresh, digest);
    assert.equal(check.use, 'hashed');
    await check.done;
    // A reader that still holds the old file: its check cannot read that file by the path.
    const stale = checks.check(path, { ...old, ctimeMs: old.ctimeMs - 1 }, digest);
    assert.equal(stale.use, 'hashed');
    await assert.rejects(stale.done, (err: unknown) => !(err instanceof ContentMismatchError) && /no longer the file being read/.test((err as Error).message));
  });

  it('remembers at most rememberCount passes, forgetting the oldest', async function () {
    const checks = new FileChecks({ rememberCount: 2, now });
    const files = await Promise.all(['a', 'b', 'c'].map((n) => blob(n, randomBytes(100))));
    const stats = await Promise.all(files.map((f) => stat(f.path)));
    for (const [i, f] of files.entries()) await checks.check(f.path, stats[i]!, f.digest).done;
    const again = files.map((f, i) => checks.check(f.path, stats[i]!, f.digest));
    assert.deepEqual(again.map((c) => c.use), ['hashed', 'remembered', 'remembered']);
    await Promise.all(again.map((c) => c.done));
  });
});
