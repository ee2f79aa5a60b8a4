/**
 * Appends chunks to a file in few, large writes.
 *
 * Chunks are held until no write is in flight and either `minWriteBytes` of
 * them wait or `maxHoldMs` passed since that moment (or since the first of
 * them came, if none was in flight); then all that is held goes in a single
 * writev. Each fs write costs a
 * round trip through libuv's thread pool, tens of microseconds of CPU on two
 * threads whatever its size, and a download from a throttled registry
 * arrives in reads of a few tens of KiB: written one by one, a 50 MiB blob
 * took over a thousand writes. Nobody waits for the disk meanwhile (readers
 * at a download's head read its bytes from memory, which keeps every byte
 * not yet written). No copies: the chunks themselves are held, so their
 * owner must not reuse them.
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

export interface CoalescingWriterInit {
  /** Bytes held at which a write starts (default 512 KiB, at most MAX_HELD_BYTES; 0: each chunk as soon as no write is in flight). */
  minWriteBytes?: number;
  /** Once no write is in flight, how long held chunks under minWriteBytes wait for more before they are written anyway (default 20 ms). */
  maxHoldMs?: number;
}

export class CoalescingWriter {
  readonly #file: WritevTarget;
  readonly #onWritten: (written: number) => void;
  #written = 0;
  /** Chunks waiting for the next write: for the one in flight to end, then for minWriteBytes or the hold timer. */
  #held: Uint8Array[] = [];
  #heldBytes = 0;
  /** The write in flight; it settles (never rejecting) once the next one has started or the hold timer is armed for what is held. */
  #inFlight: Promise<void> | undefined;
  /** Why a write failed: write() and flush() reject with it from then on. */
  #error: Error | undefined;
  readonly #minWriteBytes: number;
  readonly #maxHoldMs: number;
  /** Starts a write of what is held once it waited maxHoldMs. */
  #holdTimer: NodeJS.Timeout | undefined;

  /** Writes from position 0 of `file`; `onWritten` gets the bytes on disk after each write. */
  constructor(file: WritevTarget, onWritten: (written: number) => void, init: CoalescingWriterInit = {}) {
    this.#file = file;
    this.#onWritten = onWritten;
    // Above the bound, write() would wait for a write that is not in flight: nothing would stop what is held from growing.
    this.#minWriteBytes = Math.min(init.minWriteBytes ?? 512 * 1024, MAX_HELD_BYTES);
    this.#maxHoldMs = init.maxHoldMs ?? 20;
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
    // Each pass writes all that is held, whatever its size: it ends unless write() is called meanwhile.
    for (;;) {
      this.#startWrite(true);
      if (this.#inFlight === undefined) break;
      await this.#inFlight;
    }
    this.#throwIfFailed();
  }

  /** Drops what is not yet being written; resolves once the write in flight has ended. Never rejects. */
  async discard(): Promise<void> {
    this.#stopHoldTimer();
    this.#held = [];
    this.#heldBytes = 0;
    await this.#inFlight;
  }

  /** Writes what is held if no write is in flight and enough is (or `now`); else makes sure it is written within maxHoldMs. */
  #startWrite(now = false): void {
    if (this.#inFlight !== undefined || this.#held.length === 0) return;
    if (!now && this.#heldBytes < this.#minWriteBytes) {
      this.#holdTimer ??= setTimeout(() => {
        this.#holdTimer = undefined;
        this.#startWrite(true);
      }, this.#maxHoldMs);
      return;
    }
    this.#stopHoldTimer();
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

  #stopHoldTimer(): void {
    clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
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
