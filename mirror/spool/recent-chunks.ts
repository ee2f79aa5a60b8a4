/**
 * The last bytes a download received, kept in memory so that readers at its
 * head take them from there instead of reading them back from the file (see
 * entry.ts). It keeps the source's chunks themselves, no copies.
 *
 * A chunk leaves only from the front, and only once it is on disk: every
 * byte received is in the window or on disk. So while writes lag, the window
 * is over its bound by the bytes not yet written, which the coalescing
 * writer holds anyway (at most its MAX_HELD_BYTES and the write in flight):
 * what the window alone keeps alive stays within its bound.
 */

/**
 * Bytes of a download kept in memory once they are on disk. Readers at the
 * head (in a rollout, the local containerd and every other node's mirror)
 * trail it by a few chunks; this lets one fall some seconds of a throttled
 * upstream behind and still read from memory, at a cost bounded per download
 * in flight. A reader further behind reads the file until it catches up.
 */
export const WINDOW_BYTES = 8 * 1024 * 1024;

export class RecentChunks {
  /** The bound now: the spool shares a memory budget among its downloads. */
  readonly #bound: () => number;
  /** Oldest first; chunk i holds the blob's bytes from #offsets[i]. */
  #chunks: Uint8Array[] = [];
  #offsets: number[] = [];
  #start = 0;
  #end = 0;

  constructor(bound: () => number = () => WINDOW_BYTES) {
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

  /** Appends the blob's next bytes. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#offsets.push(this.#end);
    this.#end += chunk.length;
  }

  /** Drops chunks from the front while the window is over its bound and they are below `written`. */
  trim(written: number): void {
    const bound = this.#bound();
    while (this.#end - this.#start > bound && this.#chunks.length > 0 && this.#start + this.#chunks[0]!.length <= written) {
      this.#start += this.#chunks.shift()!.length;
      this.#offsets.shift();
    }
  }

  /** Drops every chunk; the window starts again at its end. */
  clear(): void {
    this.#chunks = [];
    this.#offsets = [];
    this.#start = this.#end;
  }

  /**
   * A view of the bytes from `position`, at most `max` of them and never past
   * the chunk that holds it; undefined when `position` is not in the window.
   */
  at(position: number, max: number): Uint8Array | undefined {
    if (position < this.#start || position >= this.#end) return undefined;
    // The last chunk whose offset is at or before `position`.
    let low = 0;
    let high = this.#offsets.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >>> 1;
      if (this.#offsets[mid]! <= position) low = mid;
      else high = mid - 1;
    }
    const from = position - this.#offsets[low]!;
    const chunk = this.#chunks[low]!;
    return chunk.subarray(from, from + Math.min(max, chunk.length - from));
  }
}
