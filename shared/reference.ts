/**
 * Repository names and tags as the OCI distribution spec defines them.
 */

// Path components: [a-z0-9]+ joined by '.', '_', '__' or one or more '-'.
const NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** distribution rejects longer names; so do we. */
export const MAX_NAME_LENGTH = 255;

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

/**
 * The repository name containerd records for an image: Docker Hub's one-segment
 * names live under `library/` (`nginx` is `docker.io/library/nginx`).
 */
export function canonicalRepository(registry: string, name: string): string {
  if (registry === 'docker.io' && !name.includes('/')) return `library/${name}`;
  return name;
}
