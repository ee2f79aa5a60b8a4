/**
 * What the upstream distribution client (issue 4; extended to blobs in issue 5)
 * gives and takes. The client itself lives beside this file.
 */
import type { Digest } from '../digest.ts';

/** Credentials for one registry, from dockerconfigjson content. */
export type RegistryCredentials = { readonly kind: 'basic'; readonly username: string; readonly password: string } | { readonly kind: 'identity-token'; readonly token: string };

/** A manifest or index as the registry names it. */
export interface ManifestDescriptor {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
}

/** Why an upstream call failed; decides retries and what callers say. */
export type UpstreamFailure =
  | 'not-found' // 404: no such repository, tag or digest
  | 'unauthorized' // 401/403 with every credential tried
  | 'rate-limited' // 429
  | 'unavailable' // 5xx, connection errors, timeouts, after retries
  | 'circuit-open' // recent failures: not even tried
  | 'invalid'; // an answer that breaks the protocol (bad digest, wrong bytes)

export class UpstreamError extends Error {
  readonly failure: UpstreamFailure;
  readonly registry: string;
  readonly status: number | undefined;
  constructor(failure: UpstreamFailure, registry: string, message: string, status?: number) {
    super(message);
    this.name = 'UpstreamError';
    this.failure = failure;
    this.registry = registry;
    this.status = status;
  }
}
