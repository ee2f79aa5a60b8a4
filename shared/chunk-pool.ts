/**
 * A few read buffers reused for one stream, instead of a fresh large buffer
 * for every read: a GET of a large blob otherwise churns a megabyte per read,
 * faster than V8 collects it (the mirror's peak RSS under load was mostly
 * such garbage), and every allocation costs GC time.
 *
 * A pooled buffer is counted: take() hands it out with one reference, every
 * retain() adds one, and every released(chunk) (of any view of it) drops one;
 * it goes back to its pool when none is left. So a buffer whose views several
 * holders keep (a download's window, readers whose responses are still writing
 * them) is reused only once all of them are done with it. A holder that never
 * releases costs an allocation, never a stall: the buffer is simply garbage.
 * A release without a reference is a bug that lets a buffer be reused under
 * a reader: each holder releases what it took or retained, once.
 */

interface Counted {
  /** Back to its pool. */
  readonly give: (memory: ArrayBuffer) => void;
  references: number;
}

const counts = new WeakMap<ArrayBufferLike, Counted>();

export class ChunkPool {
  readonly chunkBytes: number;
  readonly #keep: number;
  readonly #free: ArrayBuffer[] = [];

  /** `keep`: the most free buffers held for reuse. */
  constructor(chunkBytes: number, keep: number) {
    this.chunkBytes = chunkBytes;
    this.#keep = keep;
  }

  /** A buffer of chunkBytes, free for the caller to fill; the caller holds its one reference. */
  take(): Buffer {
    let memory = this.#free.pop();
    if (memory === undefined) {
      // Its own memory (never a slice of Node's shared pool): it is counted by its ArrayBuffer.
      memory = new ArrayBuffer(this.chunkBytes);
      counts.set(memory, { give: (m) => this.#give(m), references: 1 });
    } else {
      counts.get(memory)!.references = 1;
    }
    return Buffer.from(memory, 0, this.chunkBytes);
  }

  /** Lets go of the free buffers (nothing will be taken for a while); buffers in use come back as usual. */
  clear(): void {
    this.#free.length = 0;
  }

  #give(memory: ArrayBuffer): void {
    if (this.#free.length < this.#keep) this.#free.push(memory);
  }
}

/** Adds a reference to the pooled buffer `chunk` is a view of (nothing for other bytes); returns `chunk`. */
export function retain<T extends Uint8Array>(chunk: T): T {
  const counted = counts.get(chunk.buffer);
  if (counted === undefined) return chunk;
  // Only a holder can share a buffer: one with no reference left may already be someone else's.
  if (counted.references <= 0) throw new Error('retain() of a pooled buffer nobody holds');
  counted.references++;
  return chunk;
}

/** Says that one holder of `chunk` (a view of a pooled buffer, or any other bytes) no longer needs it. */
export function released(chunk: Uint8Array): void {
  const counted = counts.get(chunk.buffer);
  if (counted === undefined || counted.references <= 0) return;
  if (--counted.references === 0) counted.give(chunk.buffer as ArrayBuffer);
}
