/**
 * A spool download's source on the upstream client: a blob already opened at
 * offset 0 (the answer that told its size) is taken over by the first call;
 * each later call resumes with a Range request from where the last one stopped.
 */
import type { Digest } from '../../shared/digest.ts';
import type { UpstreamBlob } from '../../shared/distribution/blob.ts';
import type { UpstreamClient } from '../../shared/distribution/client.ts';
import { UpstreamError, type RegistryCredentials } from '../../shared/distribution/types.ts';
import { ContentMismatchError } from '../../shared/verify.ts';
import type { BlobSource } from './entry.ts';

export interface UpstreamSourceInit {
  client: Pick<UpstreamClient, 'openBlob'>;
  registry: string;
  repository: string;
  digest: Digest;
  credentials: readonly RegistryCredentials[];
  /** The blob as first opened (offset 0); its size is the download's. */
  opened: UpstreamBlob;
  /** See OpenBlobOptions. Default: the client's. */
  idleTimeoutMs?: number;
}

/**
 * Whether an upstream failure is worth asking again: a connection that broke
 * or went silent is; a 404, 401/403, 429 or a protocol violation will only
 * come back the same.
 */
export function isResumableUpstreamFailure(err: unknown): boolean {
  return !(err instanceof UpstreamError) || err.failure === 'unavailable';
}

export function upstreamSource(init: UpstreamSourceInit): BlobSource {
  let first: UpstreamBlob | undefined = init.opened;
  return async (offset, signal) => {
    const taken = first;
    first = undefined;
    if (taken !== undefined) {
      if (offset === 0) return taken.body;
      taken.close();
    }
    return openRest(init, init.opened.size, offset, signal);
  };
}

/** The blob's bytes from `offset`, from a new request; its answer must say the blob has `size` bytes. */
export async function openRest(init: Omit<UpstreamSourceInit, 'opened'>, size: number, offset: number, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
  const { client, registry, repository, digest, credentials, idleTimeoutMs } = init;
  const blob = await client.openBlob(registry, repository, digest, credentials, { offset, signal, idleTimeoutMs });
  if (blob.size !== size) {
    blob.close();
    throw new ContentMismatchError(`${digest.text}: ${size} bytes expected, ${registry} says ${blob.size}`);
  }
  return blob.body;
}
