/**
 * Digest checking for bytes in flight. Every byte the mirror passes on is
 * hashed; the last piece is held back until the whole content has matched its
 * digest and size, so a client never receives a complete body that is wrong:
 * on a mismatch the stream fails and the caller aborts the response.
 */
import type { Hash } from 'node:crypto';
import type { Digest } from './digest.ts';
import { newHasher } from './digest.ts';
import { released } from './chunk-pool.ts';

export class ContentMismatchError extends Error {
  override name = 'ContentMismatchError';
}

/** Inclusive byte positions, as in an HTTP Range. */
export interface Slice {
  readonly start: number;
  readonly end: number;
}

/**
 * Yields bytes `slice` (default: all) of content whose complete bytes, from
 * offset 0, come from `source`. All of the content is read and hashed even
 * when only a slice is wanted: a slice cannot be checked on its own.
 */
export async function* verifiedSlice(source: AsyncIterable<Uint8Array>, digest: Digest, size: number, slice?: Slice): AsyncGenerator<Uint8Array> {
  const hasher = newHasher(digest);
  const start = slice?.start ?? 0;
  const end = slice?.end ?? size - 1;
  let offset = 0;
  let held: Uint8Array | undefined;
  for await (const chunk of source) {
    hasher.update(chunk);
    const chunkStart = offset;
    offset += chunk.length;
    if (offset > size) throw new ContentMismatchError(`${digest.text}: more than the expected ${size} bytes`);
    const from = Math.max(start, chunkStart);
    const to = Math.min(end + 1, offset);
    if (from >= to) {
      // Outside the slice: nobody else will see it.
      released(chunk);
      continue;
    }
    const piece = from === chunkStart && to === offset ? chunk : chunk.subarray(from - chunkStart, to - chunkStart);
    if (held !== undefined) yield held;
    held = piece;
  }
  checkHashed(hasher, offset, size, digest);
  if (held !== undefined) yield held;
}

/** Fails with a ContentMismatchError unless `hasher`, fed `bytes` bytes, holds content of `size` bytes that hashes to `digest`. */
export function checkHashed(hasher: Hash, bytes: number, size: number, digest: Digest): void {
  if (bytes !== size) throw new ContentMismatchError(`${digest.text}: got ${bytes} bytes, want ${size}`);
  const actual = hasher.digest('hex');
  if (actual !== digest.hex) throw new ContentMismatchError(`${digest.text}: content hashes to ${digest.algorithm}:${actual}`);
}

/**
 * Yields `chunks` (bytes of content checked elsewhere), holding the last one
 * back until `check` has passed: a client never receives a complete body the
 * check refused. Fails with the check's error, at the next chunk once it has
 * failed, or at the end.
 */
export async function* heldUntil(chunks: AsyncIterable<Uint8Array>, check: Promise<void>): AsyncGenerator<Uint8Array> {
  let failure: { error: unknown } | undefined;
  check.catch((error: unknown) => {
    failure = { error };
  });
  let held: Uint8Array | undefined;
  for await (const chunk of chunks) {
    if (failure !== undefined) throw failure.error;
    if (held !== undefined) yield held;
    held = chunk;
  }
  await check;
  if (held !== undefined) yield held;
}

/** Collects a whole small content and checks it. */
export async function readVerified(source: AsyncIterable<Uint8Array>, digest: Digest, size: number): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of verifiedSlice(source, digest, size)) chunks.push(chunk);
  return Buffer.concat(chunks);
}
