/** How the webhook turns an image reference into a digest. */
import type { Digest } from '../../shared/digest.ts';
import type { RegistryCredentials } from '../../shared/distribution/types.ts';
import type { ImageRef } from '../../shared/image-ref.ts';

export type ResolvedBy = 'peer' | 'upstream' | 'cache';

export interface Resolution {
  readonly digest: Digest;
  readonly by: ResolvedBy;
}

/** `shoal.dev/resolve`: `upstream` (only), `peers` (only), or auto (cache → peers → upstream; mutable tags upstream first). */
export type ResolveMode = 'auto' | 'upstream' | 'peers';

export interface ResolveContext {
  readonly mode: ResolveMode;
  /** Credentials to try against the reference's registry, in order; empty: anonymous. */
  readonly credentials: readonly RegistryCredentials[];
  /** The review's remaining budget. */
  readonly signal: AbortSignal;
}

export class ResolveError extends Error {
  override name = 'ResolveError';
}

export interface ImageResolver {
  /** Resolves a tag (or no tag: latest) to a digest; throws ResolveError saying why not. */
  resolve(ref: ImageRef, context: ResolveContext): Promise<Resolution>;
}
