/**
 * The node's containerd as a ContentStore: tags from its image store, bytes
 * from the content directory's files when readable (fast, no gRPC framing),
 * else through Content.Read.
 */
import type { Stats } from 'node:fs';
import { access, constants, open, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../../../shared/digest.ts';
import { parseDigest } from '../../../shared/digest.ts';
import { ChunkPool, released } from '../../../shared/chunk-pool.ts';
import { ContentMismatchError, heldUntil, verifiedSlice, type Slice } from '../../../shared/verify.ts';
import type { Logger } from '../../../shared/log.ts';
import type { ContentStore, Descriptor, TagKey } from '../store.ts';
import { ContainerdClient, isNotFound } from './client.ts';
import { FileChecks, hashFile, sameFile, type CheckUse, type FileChecksInit } from './file-checks.ts';

export interface ContainerdStoreInit {
  /** containerd's gRPC socket. */
  socket: string;
  /** containerd namespace. */
  namespace: string;
  /** containerd's content directory (`.../io.containerd.content.v1.content`); undefined: gRPC only. */
  contentPath: string | undefined;
  logger: Logger;
  /** How content files' digest checks are shared (see file-checks.ts; its defaults). */
  checks?: FileChecksInit;
  /** Told how each read of a content file had its check: for metrics. */
  onCheck?: (use: CheckUse) => void;
}

/** Large reads: fewer, bigger chunks through hashing and the socket. */
const FILE_CHUNK_BYTES = 1024 * 1024;
/**
 * Read buffers a blob's reader keeps for reuse: enough for the chunk being
 * hashed, the one verifiedSlice holds back and a few in the socket's queue.
 */
const FILE_CHUNKS_KEPT = 4;

export class ContainerdStore implements ContentStore {
  readonly client: ContainerdClient;
  /** `<contentPath>/blobs`: a fast path only; containerd's Content API stays the truth. */
  readonly #blobsDir: string | undefined;
  readonly #checks: FileChecks;
  readonly #onCheck: (use: CheckUse) => void;

  private constructor(client: ContainerdClient, blobsDir: string | undefined, init: ContainerdStoreInit) {
    this.client = client;
    this.#blobsDir = blobsDir;
    this.#checks = new FileChecks(init.checks);
    this.#onCheck = init.onCheck ?? (() => undefined);
  }

  static async open(init: ContainerdStoreInit): Promise<ContainerdStore> {
    const client = new ContainerdClient({ socket: init.socket, namespace: init.namespace });
    const blobsDir = init.contentPath === undefined ? undefined : join(init.contentPath, 'blobs');
    if (blobsDir !== undefined) {
      // A fresh containerd has no blobs/ until its first pull: checked now only to say so.
      await access(blobsDir, constants.R_OK | constants.X_OK).catch((err: unknown) => {
        init.logger.info('content directory not readable yet; reading through Content.Read until it is', { path: blobsDir, error: err as Error });
      });
    }
    init.logger.info('containerd store ready', { socket: init.socket, namespace: init.namespace, contentPath: init.contentPath ?? 'none' });
    return new ContainerdStore(client, blobsDir, init);
  }

  async resolveTag(key: TagKey): Promise<Descriptor | undefined> {
    const image = await this.client.getImage(`${key.registry}/${key.name}:${key.tag}`);
    if (image === undefined) return undefined;
    return { mediaType: image.target.mediaType, digest: parseDigest(image.target.digest), size: image.target.size };
  }

  async size(digest: Digest): Promise<number | undefined> {
    return (await this.#fileSize(digest)) ?? (await this.client.contentInfo(digest.text))?.size;
  }

  async *read(digest: Digest, size: number, slice?: Slice): AsyncGenerator<Uint8Array> {
    const file = await this.#open(digest);
    if (file === undefined) {
      yield* verifiedSlice(this.#grpcChunks(digest), digest, size, slice);
      return;
    }
    try {
      const stats = await file.stat();
      if (stats.size !== size) throw new ContentMismatchError(`${digest.text}: the file has ${stats.size} bytes, want ${size}`);
      // The file's one check, shared with the reads that overlap it; this read sends only its slice.
      const check = this.#checks.check(this.#path(digest), stats, digest);
      this.#onCheck(check.use);
      // A shared check that could not read this read's file (replaced since it was opened): a pass over this read's own handle.
      const done = check.done.catch((err: unknown) => (err instanceof ContentMismatchError ? Promise.reject(err) : hashFile(file, size, digest)));
      const pool = new ChunkPool(FILE_CHUNK_BYTES, FILE_CHUNKS_KEPT);
      yield* heldUntil(unchangedSlice(file, stats, slice?.start ?? 0, slice?.end ?? size - 1, pool), done);
    } finally {
      await file.close();
    }
  }

  async discardPartial(digest: Digest): Promise<number> {
    // containerd's local store does not keep `expected` in an ingest's status; a fetch's
    // ref always ends with the digest (`layer-sha256:…`, `manifest-name@sha256:…`).
    const ingests = (await this.client.listIngests()).filter((i) => i.expected === digest.text || i.ref.endsWith(digest.text));
    for (const ingest of ingests) await this.client.abortIngest(ingest.ref);
    return ingests.length;
  }

  close(): Promise<void> {
    this.client.close();
    return Promise.resolve();
  }

  /** The size of the content's file, or undefined when there is no readable file for it. */
  async #fileSize(digest: Digest): Promise<number | undefined> {
    if (this.#blobsDir === undefined) return undefined;
    try {
      return (await stat(this.#path(digest))).size;
    } catch {
      // Absent, or unreadable: Content.Info decides.
      return undefined;
    }
  }

  /** The content's file, open; undefined when there is no readable file for it. */
  async #open(digest: Digest): Promise<FileHandle | undefined> {
    if (this.#blobsDir === undefined) return undefined;
    try {
      return await open(this.#path(digest), 'r');
    } catch {
      // Absent, or unreadable: Content.Read decides.
      return undefined;
    }
  }

  async *#grpcChunks(digest: Digest): AsyncGenerator<Uint8Array> {
    try {
      yield* this.client.readContent(digest.text);
    } catch (err) {
      if (isNotFound(err)) throw Object.assign(new Error(`${digest.text} not found`), { code: 'ENOENT' });
      throw err;
    }
  }

  // Safe by construction: algorithm and hex were validated by parseDigest.
  #path(digest: Digest): string {
    return join(this.#blobsDir!, digest.algorithm, digest.hex);
  }
}

/**
 * Bytes `start` to `end` (inclusive) of an open file, read into the pool's
 * buffers. Fails at the end if the file is no longer as `stats` said: the
 * check was of the file as it was, and a write into it since (never by
 * containerd) would make these bytes others than the ones checked.
 */
async function* unchangedSlice(file: FileHandle, stats: Stats, start: number, end: number, pool: ChunkPool): AsyncGenerator<Uint8Array> {
  for (let position = start; position <= end; ) {
    const buffer = pool.take();
    const { bytesRead } = await file.read(buffer, 0, Math.min(buffer.length, end + 1 - position), position);
    if (bytesRead === 0) {
      released(buffer);
      throw new ContentMismatchError(`the file ended at byte ${position}, before byte ${end}`);
    }
    position += bytesRead;
    yield buffer.subarray(0, bytesRead);
  }
  if (!sameFile(stats, await file.stat())) throw new ContentMismatchError('the file changed while it was read');
}
