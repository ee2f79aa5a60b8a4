/**
 * A blob passed straight from its downloader (the node that fetches it from
 * upstream for the cluster) to one local client, without this node's spool:
 * the downloader already shares one upstream stream among everyone who asks,
 * so writing the bytes to a second disk here would only cost CPU. Checked
 * against its digest as it passes (the last piece held back until the whole
 * matched); when the downloader fails mid-blob, the rest comes from upstream
 * with a Range.
 */
import type { Digest } from '../../shared/digest.ts';
import { ContentMismatchError, verifiedSlice, type Slice } from '../../shared/verify.ts';
import type { BlobSource, SpoolReader } from '../spool/entry.ts';
import { resumable } from '../spool/resumable.ts';

export interface RelayInit {
  digest: Digest;
  size: number;
  /** The downloader's answer (offset 0), not read yet. */
  first: { body: AsyncIterable<Uint8Array>; discard(): void };
  /** The rest from `offset` when the downloader failed. */
  resume: BlobSource;
  /** Times the rest is asked for again. */
  maxResumes: number;
  isResumable: (err: unknown) => boolean;
  /** The bytes did not match the digest, and the downloader sent some of them (it and upstream may both have). */
  onCorrupt: (err: ContentMismatchError) => void;
  /** Ends the relay (the client went away, or the mirror closes). */
  signal: AbortSignal;
}

export class RelayedBlob {
  readonly digest: Digest;
  readonly size: number;
  readonly #init: RelayInit;
  readonly #abort = new AbortController();
  #firstTaken = false;
  #reading = false;
  /** Where upstream took over from the downloader (undefined: it has not). At 0, a mismatch is upstream's alone. */
  #upstreamFrom: number | undefined;

  constructor(init: RelayInit) {
    this.#init = init;
    this.digest = init.digest;
    this.size = init.size;
  }

  /**
   * Bytes `slice` (default: all), checked, as a spool entry's reader gives
   * them; once per relay. The whole blob is read: a slice cannot be checked alone.
   */
  reader(slice?: Slice): SpoolReader {
    if (this.#reading) throw new Error('a relayed blob is read once');
    this.#reading = true;
    const { digest, size, first, resume, maxResumes, isResumable } = this.#init;
    const source: BlobSource = async (offset, signal) => {
      const taken = this.#firstTaken;
      this.#firstTaken = true;
      if (!taken && offset === 0) return first.body;
      this.#upstreamFrom ??= taken ? offset : 0;
      first.discard();
      return resume(offset, signal);
    };
    const signal = AbortSignal.any([this.#init.signal, this.#abort.signal]);
    const chunks = this.#closing(verifiedSlice(resumable({ digest, source, size, maxResumes, isResumable, signal }), digest, size, slice));
    return { [Symbol.asyncIterator]: () => chunks, close: () => this.close() };
  }

  /** Never from a download on this node. */
  readonly partial = false;

  /** Lets go of it unread: the same as close(). */
  release(): void {
    this.close();
  }

  /** Ends the relay: drops the downloader's answer (a read waiting on it wakes and fails) and any resume in flight. */
  close(): void {
    this.#abort.abort();
    this.#init.first.discard();
  }

  async *#closing(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    try {
      yield* chunks;
    } catch (err) {
      if (err instanceof ContentMismatchError && this.#upstreamFrom !== 0) this.#init.onCorrupt(err);
      throw err;
    } finally {
      this.close();
    }
  }
}
