/**
 * verifiedSlice for a content held in a local file: the main thread streams
 * the slice while a worker hashes the same inode, and the last piece is held
 * back until the worker's digest matched. Same guarantee, hashing off the
 * main thread.
 */
import { open } from 'node:fs/promises';
import type { Digest } from './digest.ts';
import type { FileHash, FileHashPool } from './file-hash-pool.ts';
import { ContentMismatchError, type Slice } from './verify.ts';

export interface VerifiedFileInit {
  pool: FileHashPool;
  path: string;
  digest: Digest;
  size: number;
  slice?: Slice;
  /** Read size. Default 1 MiB. */
  chunkBytes?: number;
}

export async function* verifiedFileSlice(init: VerifiedFileInit): AsyncGenerator<Uint8Array> {
  const { pool, path, digest, size } = init;
  const handle = await open(path, 'r');
  let hash: FileHash | undefined;
  try {
    const st = await handle.stat();
    if (st.size !== size) throw new ContentMismatchError(`${digest.text}: file holds ${st.size} bytes, want ${size}`);
    hash = pool.hash(path, digest.algorithm, st);
    // Handled here, checked below: an early failure must not be an unhandled rejection.
    hash.result.catch(() => {});
    const stream = handle.createReadStream({
      start: init.slice?.start ?? 0,
      end: init.slice?.end ?? size - 1,
      highWaterMark: init.chunkBytes ?? 1024 * 1024,
      autoClose: false,
    });
    let held: Uint8Array | undefined;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (held !== undefined) yield held;
      held = chunk;
    }
    let result: { hex: string; bytes: number };
    try {
      result = await hash.result;
    } catch (err) {
      throw new ContentMismatchError(`${digest.text}: could not be checked: ${(err as Error).message}`);
    }
    if (result.bytes !== size) throw new ContentMismatchError(`${digest.text}: got ${result.bytes} bytes, want ${size}`);
    if (result.hex !== digest.hex) throw new ContentMismatchError(`${digest.text}: content hashes to ${digest.algorithm}:${result.hex}`);
    if (held !== undefined) yield held;
  } finally {
    hash?.cancel();
    await handle.close();
  }
}
