/**
 * A few read buffers reused for one stream, instead of a fresh large buffer
 * for every read: a GET of a large blob otherwise churns a megabyte per read,
 * faster than V8 collects it (the mirror's peak RSS under load was mostly
 * such garbage), and every allocation costs GC time.
 *
 * A buffer handed out by take() comes back to its pool only when the one who
 * finished with it says so through released(chunk) (the response writer,
 * once the socket has written the chunk). A buffer that never comes back is
 * simply garbage: when none is free, take() allocates a new one, so a
 * consumer that never releases costs allocations, never a stall.
 */

const pools = new WeakMap<ArrayBufferLike, ChunkPool>();

export class ChunkPool {
  readonly chunkBytes: number;
  readonly #keep: number;
  readonly #free: ArrayBuffer[] = [];

  /** `keep`: the most free buffers held for reuse. */
  constructor(chunkBytes: number, keep: number) {
    this.chunkBytes = chunkBytes;
    this.#keep = keep;
  }

  /** A buffer of chunkBytes, free for the caller to fill. */
  take(): Buffer {
    const reused = this.#free.pop();
    if (reused !== undefined) return Buffer.from(reused, 0, this.chunkBytes);
    // Its own memory (never a slice of Node's shared pool): it comes back by its ArrayBuffer.
    const memory = new ArrayBuffer(this.chunkBytes);
    pools.set(memory, this);
    return Buffer.from(memory, 0, this.chunkBytes);
  }

  /** Back for reuse: nobody will touch `memory` again. */
  give(memory: ArrayBuffer): void {
    if (this.#free.length < this.#keep && !this.#free.includes(memory)) this.#free.push(memory);
  }
}

/** Says that `chunk` (a view of a pooled buffer, or any other bytes) is no longer needed by anyone. */
export function released(chunk: Uint8Array): void {
  const pool = pools.get(chunk.buffer);
  if (pool !== undefined) pool.give(chunk.buffer as ArrayBuffer);
}
