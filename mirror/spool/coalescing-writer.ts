/**
 * Appends chunks to a file with as few writes as the source's pace allows.
 *
 * A chunk is written as soon as no write is in flight; chunks that come while
 * one is go together in a single writev when it ends. A slow source thus gets
 * each chunk on disk at once, and a fast one gets large writes (each fs write
 * costs tens of microseconds of CPU whatever its size). No timers, no copies:
 * the chunks themselves are held, so their owner must not reuse them.
 */

/** The part of a FileHandle this needs. */
export interface WritevTarget {
  writev(buffers: Uint8Array[], position: number): Promise<{ bytesWritten: number }>;
}

/**
 * Bytes held for the next write beyond which write() waits for the one in
 * flight: bounds what a download keeps in memory (this, plus the write in
 * flight) when the disk is slower than the source, yet lets writes grow to
 * sizes where their cost per byte is small.
 */
export const MAX_HELD_BYTES = 4 * 1024 * 1024;

export class CoalescingWriter {
  readonly #file: WritevTarget;
  readonly #onWritten: (written: number) => void;
  #written = 0;
  /** Chunks waiting for the write in flight to end. */
  #held: Uint8Array[] = [];
  #heldBytes = 0;
  /** The write in flight; it settles (never rejecting) once the next one, if any, has started. */
  #inFlight: Promise<void> | undefined;
  /** Why a write failed: write() and flush() reject with it from then on. */
  #error: Error | undefined;

  /** Writes from position 0 of `file`; `onWritten` gets the bytes on disk after each write. */
  constructor(file: WritevTarget, onWritten: (written: number) => void) {
    this.#file = file;
    this.#onWritten = onWritten;
  }

  /** Bytes on disk. */
  get written(): number {
    return this.#written;
  }

  /**
   * Appends `chunk` after the bytes before it. Resolves at once, or when too
   * much is held, once the write in flight ends. Rejects when a write failed.
   */
  async write(chunk: Uint8Array): Promise<void> {
    this.#throwIfFailed();
    // An empty chunk would make an empty writev, which writes nothing and looks stuck.
    if (chunk.length === 0) return;
    this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    this.#startWrite();
    if (this.#heldBytes > MAX_HELD_BYTES) await this.#inFlight;
    this.#throwIfFailed();
  }

  /** Resolves once every chunk given is on disk; rejects when a write failed. */
  async flush(): Promise<void> {
    // Each pass waits out one write, which takes all that is held: it ends unless write() is called meanwhile.
    while (this.#inFlight !== undefined) await this.#inFlight;
    this.#throwIfFailed();
  }

  /** Drops what is not yet being written; resolves once the write in flight has ended. Never rejects. */
  async discard(): Promise<void> {
    this.#held = [];
    this.#heldBytes = 0;
    await this.#inFlight;
  }

  #startWrite(): void {
    if (this.#inFlight !== undefined || this.#held.length === 0) return;
    const batch = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    this.#inFlight = this.#writeAll(batch).then(
      () => {
        this.#inFlight = undefined;
        this.#startWrite();
      },
      (err: unknown) => {
        this.#error = err instanceof Error ? err : new Error(String(err));
        this.#inFlight = undefined;
        this.#held = [];
        this.#heldBytes = 0;
      },
    );
  }

  async #writeAll(batch: Uint8Array[]): Promise<void> {
    // A writev may take less than asked for: each pass takes at least a byte (else throws) and goes on from there.
    for (let rest = batch; rest.length > 0; ) {
      const { bytesWritten } = await this.#file.writev(rest, this.#written);
      if (bytesWritten <= 0) throw new Error(`writev wrote nothing at byte ${this.#written}`);
      this.#written += bytesWritten;
      this.#onWritten(this.#written);
      rest = without(rest, bytesWritten);
    }
  }

  #throwIfFailed(): void {
    if (this.#error !== undefined) throw this.#error;
  }
}

/** `buffers` less their first `bytes` bytes. */
function without(buffers: Uint8Array[], bytes: number): Uint8Array[] {
  let skip = bytes;
  let i = 0;
  while (i < buffers.length && skip >= buffers[i]!.length) skip -= buffers[i++]!.length;
  const rest = buffers.slice(i);
  if (skip > 0) rest[0] = rest[0]!.subarray(skip);
  return rest;
}
