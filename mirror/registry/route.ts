/**
 * Parses a registry request path into a typed route. Everything a handler
 * needs is validated here: names and tags against the distribution grammar,
 * digests against the image spec. Percent-encoded paths are refused outright,
 * so `..` or `%2e%2e` can never reach anything that touches the disk.
 */
import { DigestError, parseDigest, type Digest } from '../../shared/digest.ts';
import { isValidName, isValidTag } from '../../shared/reference.ts';
import { RegistryError } from './errors.ts';

export type ManifestReference = { readonly kind: 'tag'; readonly tag: string } | { readonly kind: 'digest'; readonly digest: Digest };

export type Route =
  | { readonly kind: 'base' }
  | { readonly kind: 'manifest'; readonly name: string; readonly reference: ManifestReference; readonly namespace: string | undefined }
  | { readonly kind: 'blob'; readonly name: string; readonly digest: Digest; readonly namespace: string | undefined };

// A `.` or `..` segment anywhere, also right after a digest algorithm (`sha256:../`).
const DOT_SEGMENT_RE = /(?:^|[/:])\.\.?(?:\/|$)/;
const ROUTE_RE = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/;

/** Throws RegistryError for anything that is not a valid pull route. */
export function parseRoute(rawUrl: string): Route {
  const q = rawUrl.indexOf('?');
  const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
  const namespace = q === -1 ? undefined : (new URLSearchParams(rawUrl.slice(q + 1)).get('ns') ?? undefined);
  if (path === '/v2/' || path === '/v2') return { kind: 'base' };
  if (path.includes('%')) throw new RegistryError('NAME_INVALID', 'percent-encoded paths are not accepted');
  if (DOT_SEGMENT_RE.test(path)) throw new RegistryError('NAME_INVALID', 'paths with . or .. segments are not accepted');
  const m = path.match(ROUTE_RE);
  if (!m) throw new RegistryError('UNSUPPORTED', 'not a pull route: this mirror serves manifests and blobs only', { path: truncate(path) }, 404);
  const [, name, kind, reference] = m as unknown as [string, string, 'manifests' | 'blobs', string];
  if (!isValidName(name)) throw new RegistryError('NAME_INVALID', 'invalid repository name', { name: truncate(name) });
  if (kind === 'blobs') return { kind: 'blob', name, digest: digestOrThrow(reference), namespace };
  if (reference.includes(':')) return { kind: 'manifest', name, reference: { kind: 'digest', digest: digestOrThrow(reference) }, namespace };
  if (!isValidTag(reference)) throw new RegistryError('MANIFEST_INVALID', 'invalid tag', { tag: truncate(reference) });
  return { kind: 'manifest', name, reference: { kind: 'tag', tag: reference }, namespace };
}

function digestOrThrow(text: string): Digest {
  try {
    return parseDigest(text);
  } catch (err) {
    if (err instanceof DigestError) throw new RegistryError('DIGEST_INVALID', err.message);
    throw err;
  }
}

function truncate(text: string): string {
  return text.length > 100 ? `${text.slice(0, 97)}...` : text;
}
