/**
 * One blob streamed from peers: from the first provider, and when it fails or
 * stalls mid-body, from the next one with a Range at the byte where the last
 * stopped. The digest check spans all of them.
 */
import type { Digest } from '../digest.ts';
import type { Provider } from '../p2p/router.ts';
import { ContentMismatchError, verifiedSlice, type Slice } from '../verify.ts';
import type { PeerFailureReason } from './metrics.ts';
import { contentLength, PeerIdleError, type PeerRequest, type PeerResponse } from './peer-client.ts';
import type { Providers } from './providers.ts';

/** A blob a peer has started to send. Either read it or close it. */
export interface PeerBlob {
  /** From the first peer's response; the digest check catches a peer that lies about it. */
  readonly size: number;
  /**
   * Bytes `slice` (default: all), checked like a store's read: the last piece
   * is held back until the whole blob matched, else it fails with a
   * ContentMismatchError (and the peers that sent it are quarantined). Fails
   * with PeersExhaustedError when every provider failed before the end. Call once.
   */
  read(slice?: Slice): AsyncIterable<Uint8Array>;
  /** Releases the peer's response and the lookup; read() does it when it ends. */
  close(): void;
}

/** No provider left to send the rest of a blob. */
export class PeersExhaustedError extends Error {
  override name = 'PeersExhaustedError';
}

/** What a blob needs from its PeerSource. */
export interface PeerCalls {
  /** The peer's response, or undefined when it is quarantined, unreachable or silent. */
  request(provider: Provider, req: PeerRequest): Promise<PeerResponse | undefined>;
  failed(provider: Provider, reason: PeerFailureReason, fields: Record<string, unknown>): void;
  /** Quarantines the peers whose bytes went into content that did not match. */
  corrupt(peerIds: Iterable<string>, digest: Digest, err: ContentMismatchError): void;
}

interface Streaming {
  readonly provider: Provider;
  readonly res: PeerResponse;
}

export interface BlobFromPeersInit {
  digest: Digest;
  /** Registry API path of the blob. */
  path: string;
  size: number;
  /** The response that gave the size, body not read yet. */
  first: Streaming;
  /** The rest of the lookup, for failover; closed with the blob. */
  providers: Providers;
  signal: AbortSignal;
  calls: PeerCalls;
}

export class BlobFromPeers implements PeerBlob {
  readonly size: number;
  readonly #init: BlobFromPeersInit;
  #first: Streaming | undefined;
  #reading = false;

  constructor(init: BlobFromPeersInit) {
    this.#init = init;
    this.size = init.size;
    this.#first = init.first;
  }

  read(slice?: Slice): AsyncIterable<Uint8Array> {
    if (this.#reading) throw new Error('PeerBlob.read() is single use');
    this.#reading = true;
    return this.#verified(slice);
  }

  close(): void {
    this.#first?.res.discard();
    this.#first = undefined;
    this.#init.providers.close();
  }

  async *#verified(slice: Slice | undefined): AsyncGenerator<Uint8Array> {
    const contributors = new Set<string>();
    try {
      yield* verifiedSlice(this.#source(contributors), this.#init.digest, this.size, slice);
    } catch (err) {
      // Which of several contributors lied cannot be told from one digest: all are skipped for a while.
      if (err instanceof ContentMismatchError) this.#init.calls.corrupt(contributors, this.#init.digest, err);
      throw err;
    } finally {
      this.close();
    }
  }

  async *#source(contributors: Set<string>): AsyncGenerator<Uint8Array> {
    const { digest, path, size, signal, calls } = this.#init;
    let offset = 0;
    let current = this.#first;
    this.#first = undefined;
    // One pass per provider; the lookup hands out at most resolveRetries of them.
    for (;;) {
      current ??= await this.#resume(offset);
      if (current === undefined) throw new PeersExhaustedError(`${digest.text}: no provider left to send bytes ${offset}-${size - 1}`);
      const { provider, res } = current;
      current = undefined;
      try {
        for await (const chunk of res.body) {
          contributors.add(provider.peerId);
          offset += chunk.length;
          yield chunk;
        }
      } catch (err) {
        if (signal.aborted) throw err;
        calls.failed(provider, err instanceof PeerIdleError ? 'idle' : 'truncated', { path, offset, error: err });
        continue;
      } finally {
        res.discard();
      }
      // At or past the size: verifiedSlice judges the whole.
      if (offset >= size) return;
      calls.failed(provider, 'truncated', { path, offset });
    }
  }

  /** The next provider that answers with bytes `offset`- of the same size. */
  async #resume(offset: number): Promise<Streaming | undefined> {
    const { path, size, signal, providers, calls } = this.#init;
    const headers = offset > 0 ? { Range: `bytes=${offset}-` } : undefined;
    for (let provider = await providers.next(); provider !== undefined; provider = await providers.next()) {
      const res = await calls.request(provider, { method: 'GET', path, headers, signal });
      if (res === undefined) continue;
      if (continues(res, offset, size)) return { provider, res };
      res.discard();
      calls.failed(provider, res.status === 200 || res.status === 206 ? 'invalid' : 'status', { path, offset, status: res.status });
    }
    return undefined;
  }
}

/** Whether a response carries exactly bytes `offset`- of a blob of `size`. */
function continues(res: PeerResponse, offset: number, size: number): boolean {
  if (offset === 0) return res.status === 200 && contentLength(res.headers) === size;
  if (res.status !== 206) return false;
  const m = /^bytes ([0-9]+)-([0-9]+)\/([0-9]+)$/.exec(res.headers['content-range'] ?? '');
  return m !== null && Number(m[1]) === offset && Number(m[2]) === size - 1 && Number(m[3]) === size;
}
