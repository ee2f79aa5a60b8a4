/**
 * The last bytes a download received, kept in memory so that readers at its
 * head take them from there instead of reading them back from the file (see
 * entry.ts).
 *
 * The bytes are copied into segments from a ChunkPool, so a download
 * allocates nothing per chunk (a fresh buffer for every chunk of a large blob
 * made V8 run a full GC every few tens of MiB) and the source's own buffer
 * goes back to its pool at once. The copy costs far less than the hashing.
 * Every segment but the last is full, and a view handed to a reader can span
 * several of the source's chunks: fewer, larger writes to its client.
 *
 * A segment leaves only from the front, and only once all of it is on disk:
 * every byte received is in the window or on disk, and the file writer's
 * views stay valid without references of their own. While writes lag, the
 * window is over its bound by the bytes not yet written. The window holds one
 * reference to each segment, and every view at() hands out one more, which its
 * reader gives back with released() once its client has the bytes: a segment
 * is reused only when nobody still reads it.
 */
import { retain, released, type ChunkPool } from '../../shared/chunk-pool.ts';

/**
 * Bytes of a download kept in memory once they are on disk. Readers at the
 * head (in a rollout, the local containerd and every other node's mirror)
 * trail it by a few chunks; this lets one fall some seconds of a throttled
 * upstream behind and still read from memory, at a cost bounded per download
 * in flight. A reader further behind reads the file until it catches up.
 */
export const WINDOW_BYTES = 8 * 1024 * 1024;

export class RecentBytes {
  readonly #pool: ChunkPool;
  /** The bound now: the spool shares a memory budget among its downloads. */
  readonly #bound: () => number;
  /** Oldest first; segment i holds the blob's bytes from #start + i * segment size. */
  #segments: Buffer[] = [];
  /** Bytes in the last segment. */
  #lastFilled = 0;
  #start = 0;
  #end = 0;

  constructor(pool: ChunkPool, bound: () => number = () => WINDOW_BYTES) {
    this.#pool = pool;
    this.#bound = bound;
  }

  /** The blob offset of the window's first byte. */
  get start(): number {
    return this.#start;
  }

  /** The blob offset just past its last byte: the bytes received. */
  get end(): number {
    return this.#end;
  }

  /**
   * Copies the blob's next bytes in; returns views of the copies, for the file
   * writer: valid until trim() is told they are written (or clear()).
   */
  push(bytes: Uint8Array): Buffer[] {
    const copies: Buffer[] = [];
    const size = this.#pool.chunkBytes;
    for (let from = 0; from < bytes.length; ) {
      if (this.#segments.length === 0 || this.#lastFilled === size) {
        this.#segments.push(this.#pool.take());
        this.#lastFilled = 0;
      }
      const segment = this.#segments[this.#segments.length - 1]!;
      const n = Math.min(size - this.#lastFilled, bytes.length - from);
      segment.set(bytes.subarray(from, from + n), this.#lastFilled);
      copies.push(segment.subarray(this.#lastFilled, this.#lastFilled + n));
      this.#lastFilled += n;
      this.#end += n;
      from += n;
    }
    return copies;
  }

  /** Lets go of segments from the front while the window is over its bound and they are full and below `written`. */
  trim(written: number): void {
    const size = this.#pool.chunkBytes;
    const bound = this.#bound();
    while (this.#segments.length > 1 && this.#end - this.#start > bound && this.#start + size <= written) {
      released(this.#segments.shift()!);
      this.#start += size;
    }
  }

  /** Lets go of every segment; the window starts again at its end. */
  clear(): void {
    for (const segment of this.#segments) released(segment);
    this.#segments = [];
    this.#lastFilled = 0;
    this.#start = this.#end;
  }

  /**
   * A view of the bytes from `position`, at most `max` of them and never past
   * the segment that holds it; undefined when `position` is not in the window.
   * The caller holds a reference: pass the view to released() once done with
   * it (stream-response does once its client has it).
   */
  at(position: number, max: number): Uint8Array | undefined {
    if (position < this.#start || position >= this.#end) return undefined;
    const size = this.#pool.chunkBytes;
    const index = Math.floor((position - this.#start) / size);
    const segment = this.#segments[index]!;
    const filled = index === this.#segments.length - 1 ? this.#lastFilled : size;
    const from = position - this.#start - index * size;
    return retain(segment.subarray(from, from + Math.min(max, filled - from)));
  }
}
