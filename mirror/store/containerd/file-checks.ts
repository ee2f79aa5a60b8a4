/**
 * One digest check per content file, shared by the reads that need it.
 *
 * A node that holds an image serves each of its blobs to every node that
 * pulls it, often to many at once. Hashing the file once per read made the
 * serving mirror hash a blob as many times as it had readers; a Range read
 * (a peer resuming) hashed the whole file for a slice of it. Here a read
 * sends its own bytes from the file and holds back its last piece until the
 * file's check has passed: one pass over the file, at the disk's pace rather
 * than any client's, for all the reads that overlap it.
 *
 * A check is of a file, not of a name: it is keyed by the file's identity
 * (device, inode, size, change and modification times), and it reads only a
 * file of that identity. containerd never writes into a committed blob (it
 * renames a finished ingest into place), so two reads of one identity read
 * the same bytes; a reader compares its file's identity again once it has
 * read, so a write into the file meanwhile fails the read (store.ts). A
 * passed check is remembered for a while (`rememberMs`), so that a rollout's
 * later pulls and resumes cost no hashing; a new file under the same digest
 * is a new identity and is checked again. A failed check is not remembered:
 * the next read checks again.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import type { Digest } from '../../../shared/digest.ts';
import { newHasher } from '../../../shared/digest.ts';
import { checkHashed, ContentMismatchError } from '../../../shared/verify.ts';

export interface FileChecksInit {
  /** How long a passed check is trusted for reads of the same file (default 5 minutes). */
  rememberMs?: number;
  /** The most passed checks remembered; the oldest are forgotten first (default 4096). */
  rememberCount?: number;
  /** Bytes per read of a check (default 1 MiB). */
  chunkBytes?: number;
  /** For tests: the clock. */
  now?: () => number;
  /** For tests: how a check opens the file's path (default fs.promises.open). */
  open?: (path: string) => Promise<FileHandle>;
}

const DEFAULT_CHUNK_BYTES = 1024 * 1024;

/** How a read's check was satisfied; for metrics. */
export type CheckUse = 'hashed' | 'joined' | 'remembered';

interface Passed {
  readonly identity: string;
  readonly at: number;
}

export class FileChecks {
  readonly #rememberMs: number;
  readonly #rememberCount: number;
  readonly #chunkBytes: number;
  readonly #now: () => number;
  readonly #open: (path: string) => Promise<FileHandle>;
  /** Checks in progress, by identity. */
  readonly #running = new Map<string, Promise<void>>();
  /** Passed checks by digest text, oldest first (a Map keeps insertion order). */
  readonly #passed = new Map<string, Passed>();

  constructor(init: FileChecksInit = {}) {
    this.#rememberMs = init.rememberMs ?? 5 * 60_000;
    this.#rememberCount = init.rememberCount ?? 4096;
    this.#chunkBytes = init.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.#now = init.now ?? Date.now;
    this.#open = init.open ?? ((path) => open(path, 'r'));
  }

  /**
   * Settles once the file at `path`, whose stats (from the reader's own
   * handle) are `stats`, has hashed to `digest`: at once when a check of the
   * same file passed lately. Fails with a ContentMismatchError when it does
   * not match, and with another error when the check could not read that file.
   */
  check(path: string, stats: Stats, digest: Digest): { done: Promise<void>; use: CheckUse } {
    const identity = identityOf(stats);
    const passed = this.#passed.get(digest.text);
    if (passed !== undefined && passed.identity === identity && this.#now() - passed.at < this.#rememberMs) return { done: Promise.resolve(), use: 'remembered' };
    const key = `${digest.text} ${identity}`;
    const running = this.#running.get(key);
    if (running !== undefined) return { done: running, use: 'joined' };
    const done = this.#run(path, identity, stats.size, digest).then(
      () => {
        this.#running.delete(key);
        this.#remember(digest.text, identity);
      },
      (err: unknown) => {
        this.#running.delete(key);
        throw err;
      },
    );
    // Readers may all have gone by the time it fails; the next read checks again.
    done.catch(() => undefined);
    this.#running.set(key, done);
    return { done, use: 'hashed' };
  }

  async #run(path: string, identity: string, size: number, digest: Digest): Promise<void> {
    const file = await this.#open(path);
    try {
      // The reader's file, not one that took its name since (containerd replaced it after a delete).
      if (identityOf(await file.stat()) !== identity) throw new Error(`${path} is no longer the file being read`);
      await hashFile(file, size, digest, this.#chunkBytes);
      // A pass over a file that changed while it was read says nothing of either version.
      if (identityOf(await file.stat()) !== identity) throw new Error(`${path} changed while it was checked`);
    } finally {
      await file.close();
    }
  }

  #remember(digest: string, identity: string): void {
    this.#passed.delete(digest);
    this.#passed.set(digest, { identity, at: this.#now() });
    if (this.#passed.size > this.#rememberCount) this.#passed.delete(this.#passed.keys().next().value!);
  }
}

/**
 * Checks that the open `file` holds `size` bytes hashing to `digest`, reading
 * it by position (so other reads of the same handle are not disturbed);
 * fails with a ContentMismatchError when it does not.
 */
export async function hashFile(file: FileHandle, size: number, digest: Digest, chunkBytes = DEFAULT_CHUNK_BYTES): Promise<void> {
  const hasher = newHasher(digest);
  // Two buffers: the next read runs on the thread pool while this one is hashed.
  const buffers = [Buffer.allocUnsafeSlow(chunkBytes), Buffer.allocUnsafeSlow(chunkBytes)];
  let position = 0;
  let pending = file.read(buffers[0]!, 0, chunkBytes, 0);
  for (let turn = 1; ; turn++) {
    const { bytesRead, buffer } = await pending;
    if (bytesRead === 0) break;
    position += bytesRead;
    if (position > size) throw new ContentMismatchError(`${digest.text}: more than the expected ${size} bytes`);
    pending = file.read(buffers[turn % 2]!, 0, chunkBytes, position);
    hasher.update(buffer.subarray(0, bytesRead));
  }
  checkHashed(hasher, position, size, digest);
}

/** Whether two stats are of the same file, unchanged: what a check is keyed by. */
export function sameFile(a: Stats, b: Stats): boolean {
  return identityOf(a) === identityOf(b);
}

/**
 * What tells one file from another at the same path: a new file, or a write
 * into it, changes one of these (as finely as the file system's timestamps).
 */
function identityOf(stats: Stats): string {
  return `${stats.dev}:${stats.ino}:${stats.size}:${stats.ctimeMs}:${stats.mtimeMs}`;
}
