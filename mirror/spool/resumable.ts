/**
 * The bytes of a blob from a source that may fail mid-way: asked from offset
 * 0, then again from the byte where it stopped, up to a limit. What counts as
 * worth asking again is the caller's; wrong content never is.
 */
import type { Digest } from '../../shared/digest.ts';
import { ContentMismatchError } from '../../shared/verify.ts';
import type { BlobSource } from './entry.ts';

export interface ResumableInit {
  digest: Digest;
  source: BlobSource;
  /** The blob's size: the source must deliver exactly up to it. */
  size: number;
  /** Times the source is asked again after a failure. */
  maxResumes: number;
  /** Which failures are worth asking again. */
  isResumable: (err: unknown) => boolean;
  /** Awaited before each resume, with the offset to be asked for and the failure; a throw ends the blob with it. */
  onResume?: (offset: number, err: unknown) => Promise<void> | void;
  signal: AbortSignal;
}

/** Yields the blob's bytes in order; fails with the last failure when it cannot go on. */
export async function* resumable(init: ResumableInit): AsyncGenerator<Uint8Array> {
  const { digest, source, size, maxResumes, isResumable, signal } = init;
  let offset = 0;
  // Bounded: each pass ends the blob (return) or fails, and failures throw once maxResumes are spent.
  for (let resumes = 0; ; resumes++) {
    try {
      signal.throwIfAborted();
      for await (const chunk of await source(offset, signal)) {
        if (offset + chunk.length > size) throw new ContentMismatchError(`${digest.text}: more than the expected ${size} bytes`);
        offset += chunk.length;
        yield chunk;
        signal.throwIfAborted();
      }
      if (offset === size) return;
      throw new Error(`source ended at byte ${offset} of ${size}`);
    } catch (err) {
      if (err instanceof ContentMismatchError || signal.aborted || resumes >= maxResumes || !isResumable(err)) throw err;
      await init.onResume?.(offset, err);
    }
  }
}
