/**
 * What the registry handler needs from the node's content: small enough that
 * containerd and an in-memory test store both satisfy it.
 */
import type { Digest } from '../../shared/digest.ts';

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
}

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
  /** All bytes of a content from offset 0, unverified; fails if absent. */
  read(digest: Digest): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
}
