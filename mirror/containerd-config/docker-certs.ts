import { readdir } from 'node:fs/promises';

/** TLS files laid out the Docker way in a registry directory (`ca.crt`, `client.cert` + `client.key`). */
export interface DockerCertificates {
  /** CA files, names relative to the registry directory (containerd resolves them there). */
  readonly ca: readonly string[];
  /** Client certificate and key files; a `.cert` with no `.key` holds both, so it is given twice. */
  readonly client: readonly (readonly [string, string])[];
}

/**
 * containerd uses these files only while the directory has no hosts.toml
 * (hosts.go, loadCertFiles), for the registry's own server: once Shoal writes a
 * hosts.toml they must be named in it, or pulls from a private CA's registry break.
 */
export async function findDockerCertificates(dir: string): Promise<DockerCertificates> {
  const entries = await readdir(dir, { withFileTypes: true });
  const files = new Set(entries.filter((e) => !e.isDirectory()).map((e) => e.name));
  const names = [...files].sort();
  return {
    ca: names.filter((n) => n.endsWith('.crt')),
    client: names.filter((n) => n.endsWith('.cert')).map((cert) => {
      const key = `${cert.slice(0, -'.cert'.length)}.key`;
      return [cert, files.has(key) ? key : cert] as const;
    }),
  };
}
