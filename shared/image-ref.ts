/**
 * Image references as pods give them (`nginx:1.27`, `ghcr.io/org/app@sha256:…`,
 * `localhost:5000/x:v1`), parsed once into registry, repository, tag and digest.
 * The grammar is the distribution reference grammar Kubernetes and containerd use.
 */
import { DigestError, parseDigest, type Digest } from './digest.ts';
import { isValidName, isValidTag } from './reference.ts';

export interface ImageRef {
  /** The reference exactly as given. */
  readonly original: string;
  /** Registry host[:port]; `docker.io` when none is named. */
  readonly registry: string;
  /** Repository within the registry, `library/` added for one-segment Docker Hub names. */
  readonly repository: string;
  /** undefined: no tag given (the registry's `latest` when there is no digest either). */
  readonly tag: string | undefined;
  readonly digest: Digest | undefined;
}

export class ImageRefError extends Error {
  override name = 'ImageRefError';
}

export const DEFAULT_REGISTRY = 'docker.io';

/** A first path component names a registry when it has a dot or a port, or is localhost. */
function isRegistryComponent(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost';
}

export function parseImageRef(original: string): ImageRef {
  if (original.length === 0 || original.length > 1024 || /\s/.test(original)) throw new ImageRefError(`invalid image reference "${original.slice(0, 100)}"`);
  let rest = original;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    try {
      digest = parseDigest(rest.slice(at + 1));
    } catch (err) {
      if (err instanceof DigestError) throw new ImageRefError(`image reference "${original}": ${err.message}`);
      throw err;
    }
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) throw new ImageRefError(`image reference "${original}": invalid tag "${tag}"`);
  }
  const slash = rest.indexOf('/');
  let registry = DEFAULT_REGISTRY;
  let repository = rest;
  if (slash !== -1 && isRegistryComponent(rest.slice(0, slash))) {
    registry = rest.slice(0, slash);
    repository = rest.slice(slash + 1);
  }
  // Docker Hub's legacy host names mean docker.io.
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DEFAULT_REGISTRY;
  if (registry === DEFAULT_REGISTRY && !repository.includes('/')) repository = `library/${repository}`;
  if (!/^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/.test(registry)) throw new ImageRefError(`image reference "${original}": invalid registry "${registry}"`);
  if (!isValidName(repository)) throw new ImageRefError(`image reference "${original}": invalid repository "${repository}"`);
  return { original, registry, repository, tag, digest };
}

/** The tag a pull of this reference resolves: the given one, else `latest`. */
export function effectiveTag(ref: ImageRef): string {
  return ref.tag ?? 'latest';
}

/** The user's reference with the digest appended: `nginx:1.27` → `nginx:1.27@sha256:…` (the tag stays for people). */
export function pinnedRef(ref: ImageRef, digest: Digest): string {
  return `${ref.original}@${digest.text}`;
}
