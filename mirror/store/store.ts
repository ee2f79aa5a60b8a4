/**
 * What the registry handler needs from the node's content: small enough that
 * containerd and an in-memory test store both satisfy it.
 */
import type { Digest } from '../../shared/digest.ts';
import type { ManifestDescriptor } from '../../shared/distribution/types.ts';
import type { Slice } from '../../shared/verify.ts';

/** A manifest's digest, media type and size: the same shape upstream and peers answer with. */
export type Descriptor = ManifestDescriptor;

export interface TagKey {
  /** `docker.io`, `127.0.0.1:5000`. */
  readonly registry: string;
  /** Repository as containerd records it (`library/nginx` for docker.io). */
  readonly name: string;
  readonly tag: string;
}

export interface ContentStore {
  /** The descriptor an image tag points at, or undefined when the node has no such image. */
  resolveTag(key: TagKey): Promise<Descriptor | undefined>;
  /** The size of a content, or undefined when the node does not hold it. */
  size(digest: Digest): Promise<number | undefined>;
  /**
   * Bytes `slice` (default: all) of a content of `size` bytes, checked against
   * the digest: the last piece is held back until the whole content matched,
   * else the stream fails with a ContentMismatchError. Each store checks in
   * the fastest way its source allows.
   */
  read(digest: Digest, size: number, slice?: Slice): AsyncIterable<Uint8Array>;
  /**
   * Drops the node's unfinished downloads of this digest, if the store keeps
   * any. containerd resumes an interrupted download from its offset, even from
   * another source, so bytes the mirror sent and then found wrong would
   * otherwise fail every later pull of the blob (containerd#3974). Returns how
   * many were dropped.
   */
  discardPartial?(digest: Digest): Promise<number>;
  close(): Promise<void>;
}

/** Collects a whole (small) content through a store's checked read. */
export async function readAll(store: ContentStore, digest: Digest, size: number): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of store.read(digest, size)) chunks.push(chunk);
  return Buffer.concat(chunks);
}
