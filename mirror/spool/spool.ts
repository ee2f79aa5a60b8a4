/**
 * The spool: blobs the mirror is downloading from upstream, on disk under
 * `<data-dir>/spool`, shared while they download. One download per digest:
 * whoever asks for a digest already in the spool gets the same entry and
 * reads it as it fills (see entry.ts). A file goes when its download fails,
 * or when it is complete and its last reader is done (after a short linger,
 * for nodes that ask a moment later). The directory is emptied when the spool
 * opens: nothing survives a restart, since a half-written file's hash state
 * is gone with the process.
 *
 * Bounded: every download holds its blob's full size against `maxBytes` from
 * its start until its file is removed. A download that does not fit is
 * refused (download() returns undefined) after evicting complete files nobody
 * reads; bytes still downloading or being read are never evicted. A refused
 * caller answers 404, so the client goes upstream itself.
 */
import { mkdir, readdir, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../../shared/digest.ts';
import { silentLogger, type Logger } from '../../shared/log.ts';
import { SpoolEntry, type BlobSource, type EntryControl, type SpoolObserver } from './entry.ts';
import { ChunkPool } from '../../shared/chunk-pool.ts';
import { WINDOW_BYTES } from './recent-bytes.ts';

export interface SpoolInit {
  /** The spool's own directory, `<data-dir>/spool`: emptied on open and close, so nothing else may live there. */
  dir: string;
  /** Most bytes the spool's files may take together, each download counted at its blob's full size. */
  maxBytes: number;
  /** Times a download asks its source again after a failure mid-way. Default 3. */
  maxResumes?: number;
  /** Which source failures are worth asking again (e.g. not a 404). Default: all but wrong content. */
  isResumable?: (err: unknown) => boolean;
  /** How long a complete file stays after its last reader is done (it may be evicted sooner for room). Default 10 s. */
  lingerMs?: number;
  /** Default: silent. */
  logger?: Logger;
  /** Hooks for metrics. */
  observer?: SpoolObserver;
}

export const SPOOL_DEFAULTS = { maxResumes: 3, lingerMs: 10_000 } as const;

/**
 * Memory all downloads together keep for readers at their heads (each at most
 * WINDOW_BYTES, at least MIN_WINDOW_BYTES): a node starting many downloads at
 * once (a cluster bootstrap pulls dozens of images) must stay within its
 * container's limit; a reader that falls out of a smaller window reads the file.
 * A window also keeps the bytes not yet on disk, which the file writer holds
 * up to 512 KiB at a time (see coalescing-writer.ts): with many downloads at
 * the minimum, that can double what each keeps.
 */
const WINDOWS_BUDGET_BYTES = 64 * 1024 * 1024;
const MIN_WINDOW_BYTES = 512 * 1024;

/**
 * The unit of the windows' memory and of readers' file reads: 4 per MiB, so
 * few writes per MiB to a client, and a smallest window holds two. Enough
 * segments are kept for one full window and its readers' writes in flight,
 * let go when the last download ends; file reads keep a few.
 */
const SEGMENT_BYTES = 256 * 1024;
const SEGMENTS_KEPT = WINDOW_BYTES / SEGMENT_BYTES + 16;
const FILE_READS_KEPT = 8;

interface Held {
  readonly entry: SpoolEntry;
  readonly control: EntryControl;
}

export class Spool {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #init: SpoolInit;
  readonly #logger: Logger;
  readonly #observer: SpoolObserver;
  /** digest → its download, in progress or complete, until its file is removed. In start order: eviction takes the oldest first. */
  readonly #entries = new Map<string, Held>();
  #usedBytes = 0;
  #files = 0;
  /** Downloads in progress: they share the windows' budget. */
  #downloading = 0;
  readonly #segments = new ChunkPool(SEGMENT_BYTES, SEGMENTS_KEPT);
  readonly #fileReads = new ChunkPool(SEGMENT_BYTES, FILE_READS_KEPT);
  #closed = false;

  private constructor(init: SpoolInit) {
    this.#init = init;
    this.dir = init.dir;
    this.maxBytes = init.maxBytes;
    this.#logger = init.logger ?? silentLogger;
    this.#observer = init.observer ?? {};
  }

  /** Empties (or creates) `init.dir` and opens the spool over it. */
  static async open(init: SpoolInit): Promise<Spool> {
    if (!Number.isSafeInteger(init.maxBytes) || init.maxBytes < 0) throw new RangeError(`spool maxBytes ${init.maxBytes} is not a byte count`);
    const spool = new Spool(init);
    const left = await readdir(init.dir).catch(() => []);
    await rm(init.dir, { recursive: true, force: true });
    await mkdir(init.dir, { recursive: true });
    if (left.length > 0) spool.#logger.info('emptied the spool: partial downloads do not survive a restart', { dir: init.dir, removed: left.length });
    return spool;
  }

  /** Bytes held now by downloads and files not yet removed. */
  get usedBytes(): number {
    return this.#usedBytes;
  }

  /** The digest's download, in progress or complete, while its file is in the spool. */
  get(digest: Digest): SpoolEntry | undefined {
    return this.#entries.get(digest.text)?.entry;
  }

  /**
   * The digest's entry in the spool, shared; else a new download of `size`
   * bytes from `source` (not called when the entry is shared; its size is the
   * entry's). undefined: no room for `size` more bytes, even after evicting
   * complete files nobody reads.
   */
  download(digest: Digest, size: number, source: BlobSource): SpoolEntry | undefined {
    if (this.#closed) throw new Error('the spool is closed');
    const existing = this.#entries.get(digest.text);
    if (existing !== undefined) {
      this.#observer.joined?.(digest);
      return existing.entry;
    }
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`${digest.text}: size ${size} is not a byte count`);
    if (!this.#makeRoom(size)) {
      this.#observer.refused?.(digest, size);
      this.#logger.debug('spool full: download refused', { digest: digest.text, size, usedBytes: this.#usedBytes, maxBytes: this.maxBytes });
      return undefined;
    }
    // A new name for every download: a file of a failed one may still be on its way out.
    const path = join(this.dir, `${digest.hex}.${++this.#files}.partial`);
    const held = SpoolEntry.start({
      digest,
      size,
      path,
      source,
      maxResumes: this.#init.maxResumes ?? SPOOL_DEFAULTS.maxResumes,
      isResumable: this.#init.isResumable ?? (() => true),
      lingerMs: this.#init.lingerMs ?? SPOOL_DEFAULTS.lingerMs,
      observer: this.#observer,
      logger: this.#logger,
      windowBytes: () => Math.min(WINDOW_BYTES, Math.max(MIN_WINDOW_BYTES, Math.floor(WINDOWS_BUDGET_BYTES / Math.max(1, this.#downloading)))),
      segments: this.#segments,
      fileReads: this.#fileReads,
      retire: (entry) => this.#remove(entry, path),
    });
    this.#downloading++;
    void held.entry.done.then(() => {
      if (--this.#downloading === 0) this.#segments.clear();
    });
    this.#entries.set(digest.text, held);
    this.#usedBytes += size;
    return held.entry;
  }

  /** Fails the downloads in progress, then empties the directory: readers of complete files that had not opened theirs fail too. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const held = [...this.#entries.values()];
    const reason = new Error('the spool closed');
    for (const { control } of held) control.abort(reason);
    await Promise.all(held.map(({ entry }) => entry.done));
    this.#entries.clear();
    this.#usedBytes = 0;
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Whether `size` more bytes fit, after evicting idle complete files, oldest first. */
  #makeRoom(size: number): boolean {
    if (size > this.maxBytes) return false;
    // Bounded by the number of entries: each pass evicts one or stops.
    for (const { entry, control } of this.#entries.values()) {
      if (this.#usedBytes + size <= this.maxBytes) break;
      if (control.evictIfIdle()) this.#logger.debug('evicted a complete spool file for room', { digest: entry.digest.text, size: entry.size });
    }
    return this.#usedBytes + size <= this.maxBytes;
  }

  #remove(entry: SpoolEntry, path: string): void {
    if (this.#entries.get(entry.digest.text)?.entry === entry) {
      this.#entries.delete(entry.digest.text);
      this.#usedBytes -= entry.size;
    }
    unlink(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') this.#logger.warn('could not remove a spool file', { path, error: err });
    });
  }
}
