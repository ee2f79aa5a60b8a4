/**
 * The node's containerd as a ContentStore: tags from its image store, bytes
 * from the content directory's files when readable (fast, no gRPC framing),
 * else through Content.Read.
 */
import { createReadStream } from 'node:fs';
import { access, constants, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../../../shared/digest.ts';
import { parseDigest } from '../../../shared/digest.ts';
import type { Logger } from '../../../shared/log.ts';
import type { ContentStore, Descriptor, TagKey } from '../store.ts';
import { ContainerdClient, isNotFound } from './client.ts';

export interface ContainerdStoreInit {
  /** containerd's gRPC socket. */
  socket: string;
  /** containerd namespace. */
  namespace: string;
  /** containerd's content directory (`.../io.containerd.content.v1.content`); undefined: gRPC only. */
  contentPath: string | undefined;
  logger: Logger;
}

/** Large reads: fewer, bigger chunks through hashing and the socket. */
const FILE_CHUNK_BYTES = 1024 * 1024;

export class ContainerdStore implements ContentStore {
  readonly client: ContainerdClient;
  /** Set once the content directory proved readable. */
  readonly #blobsDir: string | undefined;

  private constructor(client: ContainerdClient, blobsDir: string | undefined) {
    this.client = client;
    this.#blobsDir = blobsDir;
  }

  static async open(init: ContainerdStoreInit): Promise<ContainerdStore> {
    const client = new ContainerdClient({ socket: init.socket, namespace: init.namespace });
    let blobsDir: string | undefined;
    if (init.contentPath !== undefined) {
      const dir = join(init.contentPath, 'blobs');
      try {
        await access(dir, constants.R_OK | constants.X_OK);
        blobsDir = dir;
      } catch (err) {
        init.logger.warn('content directory not readable; serving through containerd Content.Read', { path: dir, error: err as Error });
      }
    }
    init.logger.info('containerd store ready', { socket: init.socket, namespace: init.namespace, blobs: blobsDir ?? 'grpc' });
    return new ContainerdStore(client, blobsDir);
  }

  get readsFiles(): boolean {
    return this.#blobsDir !== undefined;
  }

  async resolveTag(key: TagKey): Promise<Descriptor | undefined> {
    const image = await this.client.getImage(`${key.registry}/${key.name}:${key.tag}`);
    if (image === undefined) return undefined;
    return { mediaType: image.target.mediaType, digest: parseDigest(image.target.digest), size: image.target.size };
  }

  async size(digest: Digest): Promise<number | undefined> {
    if (this.#blobsDir !== undefined) {
      try {
        return (await stat(this.#path(digest))).size;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    }
    return (await this.client.contentInfo(digest.text))?.size;
  }

  async *read(digest: Digest): AsyncGenerator<Uint8Array> {
    if (this.#blobsDir !== undefined) {
      yield* createReadStream(this.#path(digest), { highWaterMark: FILE_CHUNK_BYTES }) as AsyncIterable<Buffer>;
      return;
    }
    try {
      yield* this.client.readContent(digest.text);
    } catch (err) {
      if (isNotFound(err)) throw Object.assign(new Error(`${digest.text} not found`), { code: 'ENOENT' });
      throw err;
    }
  }

  close(): Promise<void> {
    this.client.close();
    return Promise.resolve();
  }

  // Safe by construction: algorithm and hex were validated by parseDigest.
  #path(digest: Digest): string {
    return join(this.#blobsDir!, digest.algorithm, digest.hex);
  }
}
