/**
 * One blob being downloaded into the spool, and read while it downloads.
 *
 * The download appends the source's bytes to the entry's file and hashes them
 * as they come, coalescing the writes (see coalescing-writer.ts); when the
 * source fails mid-way it is asked again from the byte it stopped at. Readers
 * take what was received and wait for the next chunk (an event, never a poll):
 * the last bytes received from memory (see recent-bytes.ts), older bytes
 * from the file, read into pooled buffers. Once the download has ended,
 * only the file is read.
 * A reader never gets the last byte it wants until the whole blob has matched
 * its size and digest: a client cannot end up with a complete body that is
 * wrong. When the download fails, every reader fails with its error (a
 * ContentMismatchError when the bytes were wrong).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { released, type ChunkPool } from '../../shared/chunk-pool.ts';
import { newHasher, type Digest } from '../../shared/digest.ts';
import type { Logger } from '../../shared/log.ts';
import { checkHashed, type Slice } from '../../shared/verify.ts';
import { CoalescingWriter } from './coalescing-writer.ts';
import { RecentBytes } from './recent-bytes.ts';
import { resumable } from './resumable.ts';

/**
 * Where a download's bytes come from: the blob's bytes `offset` to the end.
 * Asked once with offset 0, then again from where it stopped after each
 * failure, up to the spool's resume limit. The signal fires when the spool
 * closes. Each chunk is copied, then handed to released(): a chunk from a
 * ChunkPool goes back to it at once.
 */
export type BlobSource = (offset: number, signal: AbortSignal) => Promise<AsyncIterable<Uint8Array>>;

export type SpoolState = 'downloading' | 'complete' | 'failed';

/** Hooks for metrics and tests; each is optional and must not throw. */
export interface SpoolObserver {
  /** A download began. */
  started?(digest: Digest, size: number): void;
  /** download() found the digest already in the spool and shared that entry. */
  joined?(digest: Digest): void;
  /** download() was refused: the spool has no room for `size` more bytes. */
  refused?(digest: Digest, size: number): void;
  /** The source failed at `offset` and is asked again from there. */
  resumed?(digest: Digest, offset: number, error: unknown): void;
  /** A download ended; `error` when it failed. */
  finished?(digest: Digest, state: 'complete' | 'failed', error?: Error): void;
  /** A reader passed on `bytes`; `partial`: read before the download had completed (a download shared in flight). */
  served?(digest: Digest, bytes: number, partial: boolean): void;
}

/** The entry's file is gone (it lingered unread and was removed): read from somewhere else. */
export class SpoolEntryGoneError extends Error {
  override name = 'SpoolEntryGoneError';
}

/**
 * Readers waiting at the head are woken once this much more has arrived, or
 * NOTIFY_DELAY_MS after the first byte they have not been told of. Woken for
 * each chunk the source delivered (40-50 KiB on average from a registry
 * 400 Mbit/s away, measured), every reader wrote that little to its client: a
 * system call and a round of promises each, for the local containerd and for
 * every node relaying the download.
 */
const NOTIFY_BYTES = 256 * 1024;
const NOTIFY_DELAY_MS = 5;

/** A reader of an entry: iterate it once, or close it. Either way its hold on the file ends. */
export interface SpoolReader extends AsyncIterable<Uint8Array> {
  /** Stops the reader (a reader waiting for bytes wakes and ends) and lets go of the file. Idempotent. */
  close(): void;
}

export interface EntryInit {
  digest: Digest;
  size: number;
  /** The file to write; must not exist. */
  path: string;
  source: BlobSource;
  maxResumes: number;
  isResumable: (err: unknown) => boolean;
  lingerMs: number;
  observer: SpoolObserver;
  logger: Logger;
  /** Most bytes already on disk kept in memory for readers at the head, now (see recent-bytes.ts). */
  windowBytes: () => number;
  /** Memory for the window's segments. */
  segments: ChunkPool;
  /** Buffers for readers' file reads. */
  fileReads: ChunkPool;
  /** Called once, when the file can go: the download failed, or it is complete, unread and past its linger (or evicted). */
  retire: (entry: SpoolEntry) => void;
}

/** What only the spool may do to an entry. */
export interface EntryControl {
  /** Fails a download in progress with `reason` (the spool is closing). */
  abort(reason: Error): void;
  /** Retires the entry now if it is complete and has no reader; says whether it did. */
  evictIfIdle(): boolean;
}

export class SpoolEntry {
  readonly digest: Digest;
  readonly size: number;
  /** Settles when the download ends, never rejecting: 'complete' or 'failed' (see error). */
  readonly done: Promise<'complete' | 'failed'>;

  readonly #init: EntryInit;
  readonly #abort = new AbortController();
  #state: SpoolState = 'downloading';
  #error: Error | undefined;
  #written = 0;
  /** The last bytes received (its end: the bytes received); emptied when the download ends. */
  readonly #recent: RecentBytes;
  #readers = 0;
  #retired = false;
  #linger: NodeJS.Timeout | undefined;
  /** Resolved, and replaced, when bytes arrived (see NOTIFY_BYTES) and on every state change: what waiting readers await. */
  #changed = Promise.withResolvers<void>();
  /** Bytes received when waiting readers were last woken. */
  #notified = 0;
  /** Wakes readers for bytes received under NOTIFY_BYTES; armed while such bytes wait. */
  #notifyTimer: NodeJS.Timeout | undefined;
  #notifyArmed = false;

  private constructor(init: EntryInit) {
    this.#init = init;
    this.digest = init.digest;
    this.size = init.size;
    this.#recent = new RecentBytes(init.segments, init.windowBytes);
    this.done = this.#download();
  }

  /** Starts downloading `init.digest` into `init.path`. */
  static start(init: EntryInit): { entry: SpoolEntry; control: EntryControl } {
    const entry = new SpoolEntry(init);
    return {
      entry,
      control: {
        abort: (reason) => entry.#abort.abort(reason),
        evictIfIdle: () => {
          if (entry.#state !== 'complete' || entry.#readers > 0 || entry.#retired) return false;
          entry.#retire();
          return true;
        },
      },
    };
  }

  get state(): SpoolState {
    return this.#state;
  }

  /** Whether its bytes are still arriving (bytes read now come from a partial download). */
  get partial(): boolean {
    return this.#state === 'downloading';
  }

  /** Nothing to let go of: readers, not this object, hold the entry. */
  release(): void {}

  /** Bytes on disk so far. */
  get written(): number {
    return this.#written;
  }

  /** Why the download failed. */
  get error(): Error | undefined {
    return this.#error;
  }

  /**
   * Bytes `slice` (default: all) as they become available, the last of them
   * only once the blob is verified. Fails with the download's error if it
   * fails (also when it had failed before). Throws SpoolEntryGoneError when a
   * complete entry's file is already gone.
   * The file stays while the reader is open: iterate it to its end or close it.
   */
  reader(slice?: Slice): SpoolReader {
    if (this.#retired && this.#state !== 'failed') throw new SpoolEntryGoneError(`${this.digest.text}: no longer in the spool`);
    const start = slice?.start ?? 0;
    const end = slice?.end ?? this.size - 1;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end >= this.size || start > end + 1) {
      throw new RangeError(`${this.digest.text}: bytes ${start}-${end} are not within its ${this.size}`);
    }
    this.#readers++;
    clearTimeout(this.#linger);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#readers--;
      this.#maybeRetire();
    };
    const stop = { stopped: false };
    const chunks = this.#read(start, end, stop, release);
    let iterated = false;
    return {
      [Symbol.asyncIterator]: () => {
        if (iterated) throw new Error('a spool reader is read once');
        iterated = true;
        return chunks;
      },
      close: () => {
        stop.stopped = true;
        release();
        // Wakes the reader if it waits for bytes; it sees `stopped` and ends.
        this.#notify();
        void chunks.return(undefined);
      },
    };
  }

  async *#read(start: number, end: number, stop: { stopped: boolean }, release: () => void): AsyncGenerator<Uint8Array> {
    let file: FileHandle | undefined;
    let pos = start;
    try {
      // Each pass reads at least a byte or waits for the next change; the download's end (or stop) ends the waits.
      while (pos <= end && !stop.stopped) {
        this.#throwIfFailed();
        // Until the blob is verified, the last wanted byte is held back.
        const limit = this.#state === 'complete' ? end + 1 : Math.min(this.#recent.end, end);
        if (pos >= limit) {
          await this.#changed.promise;
          continue;
        }
        const partial = this.#state !== 'complete';
        const recent = this.#recent.at(pos, limit - pos);
        if (recent !== undefined) {
          pos += recent.length;
          this.#init.observer.served?.(this.digest, recent.length, partial);
          yield recent;
          continue;
        }
        // Behind the window (or the download has ended): the bytes are on disk.
        const length = Math.min(limit, this.#written) - pos;
        if (length <= 0) throw new Error(`${this.digest.text}: byte ${pos} is neither in memory nor on disk`);
        const buffer = this.#init.fileReads.take();
        let bytesRead: number;
        try {
          file ??= await open(this.#init.path, 'r');
          ({ bytesRead } = await file.read(buffer, 0, Math.min(length, buffer.length), pos));
          if (bytesRead === 0) throw new Error(`${this.digest.text}: spool file ends at ${pos}, ${this.#written} bytes were written`);
        } catch (err) {
          released(buffer);
          // The download failed (and its file went) under us: say why it failed, not what that did to the read.
          this.#throwIfFailed();
          throw err;
        }
        pos += bytesRead;
        this.#init.observer.served?.(this.digest, bytesRead, partial);
        yield buffer.subarray(0, bytesRead);
      }
      // An empty slice has no last byte to hold back: its end waits for the verdict instead.
      while (this.#state === 'downloading' && !stop.stopped) await this.#changed.promise;
      if (!stop.stopped) this.#throwIfFailed();
    } finally {
      await file?.close().catch(() => {});
      release();
    }
  }

  async #download(): Promise<'complete' | 'failed'> {
    const { digest, size, path, maxResumes, isResumable, observer, logger } = this.#init;
    const signal = this.#abort.signal;
    const hasher = newHasher(digest);
    let file: FileHandle | undefined;
    let writer: CoalescingWriter | undefined;
    observer.started?.(digest, size);
    try {
      // `wx`: a file left by anything else is an error, never appended to.
      file = await open(path, 'wx');
      // Readers wait for bytes received, not written: a write wakes nobody.
      const fileWriter = new CoalescingWriter(file, (bytes) => {
        this.#written = bytes;
        this.#recent.trim(bytes);
      });
      writer = fileWriter;
      const chunks = resumable({
        digest,
        source: this.#init.source,
        size,
        maxResumes,
        isResumable,
        signal,
        // All that was hashed goes to disk before the source is asked again: a failed
        // write (which asking again would not mend) throws here and fails the download.
        onResume: async (offset, err) => {
          await fileWriter.flush();
          observer.resumed?.(digest, offset, err);
          logger.debug('spool download failed mid-way; resuming', { digest: digest.text, offset, size, error: err as Error });
        },
      });
      for await (const chunk of chunks) {
        hasher.update(chunk);
        const copies = this.#recent.push(chunk);
        released(chunk);
        this.#recent.trim(this.#written);
        this.#received();
        for (const copy of copies) await fileWriter.write(copy);
      }
      // Once complete, readers take every byte up to the size from the file.
      await fileWriter.flush();
      checkHashed(hasher, fileWriter.written, size, digest);
      await file.close();
      file = undefined;
      this.#state = 'complete';
      this.#recent.clear();
    } catch (err) {
      await writer?.discard();
      await file?.close().catch(() => {});
      this.#state = 'failed';
      this.#error = err instanceof Error ? err : new Error(String(err));
      // Only now: a reader that still sees 'downloading' may need bytes that never reached the disk.
      this.#recent.clear();
    }
    clearTimeout(this.#notifyTimer);
    this.#notify();
    observer.finished?.(digest, this.#state, this.#error);
    this.#maybeRetire();
    return this.#state;
  }

  #throwIfFailed(): void {
    if (this.#state === 'failed') throw this.#error ?? new Error(`${this.digest.text}: download failed`);
  }

  /** Bytes arrived: wake waiting readers once enough has, or soon. */
  #received(): void {
    if (this.#recent.end - this.#notified >= NOTIFY_BYTES) return this.#notify();
    if (this.#notifyArmed) return;
    this.#notifyArmed = true;
    // One timer for the whole download, re-armed: no timer allocated per chunk.
    this.#notifyTimer ??= setTimeout(() => {
      this.#notifyArmed = false;
      if (this.#recent.end > this.#notified) this.#notify();
    }, NOTIFY_DELAY_MS).unref();
    this.#notifyTimer.refresh();
  }

  #notify(): void {
    this.#notified = this.#recent.end;
    const changed = this.#changed;
    this.#changed = Promise.withResolvers<void>();
    changed.resolve();
  }

  /** A failed entry goes at once (its readers fail); a complete one when unread for the linger. */
  #maybeRetire(): void {
    if (this.#retired || this.#state === 'downloading') return;
    if (this.#state === 'failed') return this.#retire();
    if (this.#readers > 0) return;
    if (this.#init.lingerMs <= 0) return this.#retire();
    clearTimeout(this.#linger);
    this.#linger = setTimeout(() => this.#maybeRetireAfterLinger(), this.#init.lingerMs);
    // A lingering file must not keep the process up.
    this.#linger.unref();
  }

  #maybeRetireAfterLinger(): void {
    if (!this.#retired && this.#readers === 0) this.#retire();
  }

  #retire(): void {
    this.#retired = true;
    clearTimeout(this.#linger);
    this.#init.retire(this);
  }
}
