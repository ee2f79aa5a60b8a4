/**
 * Where a connection's socket reads go: the free rest of one pooled buffer,
 * each read after the last. A view of a read handed to the consumer holds its
 * own reference (released() by whoever ends up with it), and the connection
 * holds one until it moves on to a fresh buffer: a buffer goes back to the
 * pool once every view of it is released. A TLS socket reads one record (at
 * most 16 KiB) at a time; a buffer per read would pin 128 KiB for every
 * 16 KiB of body.
 */
import { released, retain, type ChunkPool } from '../chunk-pool.ts';

/** Less room than this left, and the next read gets a fresh buffer: a TLS record fits. */
const MIN_READ_BYTES = 16 * 1024 + 64;

export class ReadArea {
  readonly #pool: ChunkPool;
  #buffer: Buffer | undefined;
  /** Bytes of #buffer that views handed out may still read: the next read goes after them. */
  #used = 0;
  /** Where in #buffer the last read began. */
  #offered = 0;

  constructor(pool: ChunkPool) {
    this.#pool = pool;
  }

  /** Room for the next read (net's onread `buffer`). */
  next(): Buffer {
    if (this.#buffer === undefined || this.#buffer.length - this.#used < MIN_READ_BYTES) {
      if (this.#buffer !== undefined) released(this.#buffer);
      this.#buffer = this.#pool.take();
      this.#used = 0;
    }
    this.#offered = this.#used;
    return this.#buffer.subarray(this.#used);
  }

  /**
   * `view`, of the last read's bytes (`readBytes` of them), goes to a consumer
   * who will release it: the next read goes past that read. A read nothing was
   * handed out of is simply read over.
   */
  handOut<T extends Uint8Array>(view: T, readBytes: number): T {
    this.#used = this.#offered + readBytes;
    return retain(view);
  }

  /** The connection is closed: it lets go of its buffer (views handed out keep theirs). */
  close(): void {
    if (this.#buffer !== undefined) released(this.#buffer);
    this.#buffer = undefined;
  }
}
