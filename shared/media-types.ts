/** Manifest media types, and telling a manifest from any other content. */

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

export const MANIFEST_MEDIA_TYPES: readonly string[] = Object.values(MEDIA_TYPES);

/** distribution's own limit on a manifest's size. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/**
 * The media type of manifest bytes: the `mediaType` field, or, for OCI
 * content that omits it, what its shape says. undefined: not a manifest.
 */
export function manifestMediaType(bytes: Uint8Array): string | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null || (doc as { schemaVersion?: unknown }).schemaVersion !== 2) return undefined;
  const { mediaType, manifests, config } = doc as { mediaType?: unknown; manifests?: unknown; config?: unknown };
  if (typeof mediaType === 'string') return MANIFEST_MEDIA_TYPES.includes(mediaType) ? mediaType : undefined;
  if (Array.isArray(manifests)) return MEDIA_TYPES.ociIndex;
  if (typeof config === 'object' && config !== null) return MEDIA_TYPES.ociManifest;
  return undefined;
}
