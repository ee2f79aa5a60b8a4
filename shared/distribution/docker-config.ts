/**
 * Pull credentials from Docker config content: `.dockerconfigjson` (Secrets of
 * type kubernetes.io/dockerconfigjson, `~/.docker/config.json`: `{"auths": {...}}`)
 * and the legacy `.dockercfg` (kubernetes.io/dockercfg: the auths map itself).
 *
 * Keys name a registry as Docker and the kubelet accept them: a host[:port], or a
 * URL whose scheme and path are dropped (`https://registry.example:5000/v2/`), with
 * Docker Hub's aliases (`https://index.docker.io/v1/`, `index.docker.io`,
 * `registry-1.docker.io`) meaning `docker.io`. As in the kubelet, a `*` stands for
 * one whole DNS label (`*.example.com`). An entry holds `auth` (base64
 * `user:password`, preferred when present) or `username`/`password`, and may hold
 * an `identitytoken`, which is tried before the password.
 */
import { readFile } from 'node:fs/promises';
import type { RegistryCredentials } from './types.ts';

export type DockerConfigKind = 'dockerconfigjson' | 'dockercfg';

export interface RegistryCredentialLookup {
  /** Credentials for a registry (as image references name it: `docker.io`, `host:port`), exact keys first, then wildcard keys; each in file order. */
  credentialsFor(registry: string): RegistryCredentials[];
  /** The registries the content names (normalised keys, wildcards as written). */
  readonly registries: readonly string[];
}

export class DockerConfigError extends Error {
  override name = 'DockerConfigError';
}

const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);

/** host[:port] from a key or a registry name; lowercased; Docker Hub's aliases become `docker.io`. */
export function normalizeRegistryKey(key: string): string {
  let text = key.trim();
  const scheme = text.indexOf('://');
  if (scheme !== -1) text = text.slice(scheme + 3);
  const slash = text.indexOf('/');
  if (slash !== -1) text = text.slice(0, slash);
  text = text.toLowerCase();
  return DOCKER_HUB_ALIASES.has(text) ? 'docker.io' : text;
}

interface Entry {
  readonly key: string;
  readonly wildcard: boolean;
  readonly credentials: readonly RegistryCredentials[];
}

export function parseDockerConfig(json: string, kind: DockerConfigKind): RegistryCredentialLookup {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (err) {
    throw new DockerConfigError(`${kind}: not JSON (${(err as Error).message})`);
  }
  if (!isObject(doc)) throw new DockerConfigError(`${kind}: want a JSON object`);
  const auths = kind === 'dockerconfigjson' ? (doc.auths ?? {}) : doc;
  if (!isObject(auths)) throw new DockerConfigError(`${kind}: "auths" must be an object`);
  const entries: Entry[] = [];
  for (const [rawKey, value] of Object.entries(auths)) {
    const key = normalizeRegistryKey(rawKey);
    if (key.length === 0) throw new DockerConfigError(`${kind}: empty registry key "${rawKey}"`);
    const credentials = parseEntry(value, `${kind} entry "${rawKey}"`);
    if (credentials.length === 0) continue;
    entries.push({ key, wildcard: key.includes('*'), credentials });
  }
  return lookupOf(entries);
}

/**
 * Reads `--registry-credentials-file`: dockerconfigjson content, or dockercfg
 * when the top level has no `auths` object (unless `kind` says which).
 */
export async function readRegistryCredentialsFile(path: string, kind?: DockerConfigKind): Promise<RegistryCredentialLookup> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new DockerConfigError(`cannot read registry credentials file ${path}: ${(err as Error).message}`);
  }
  let detected = kind;
  if (detected === undefined) {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new DockerConfigError(`registry credentials file ${path}: not JSON (${(err as Error).message})`);
    }
    detected = isObject(doc) && isObject(doc.auths) ? 'dockerconfigjson' : 'dockercfg';
  }
  try {
    return parseDockerConfig(text, detected);
  } catch (err) {
    if (err instanceof DockerConfigError) throw new DockerConfigError(`registry credentials file ${path}: ${err.message}`);
    throw err;
  }
}

/** Credentials in one entry; messages name the entry, never its secrets. */
function parseEntry(value: unknown, where: string): RegistryCredentials[] {
  if (!isObject(value)) throw new DockerConfigError(`${where}: want an object`);
  const field = (name: string): string | undefined => {
    const v = value[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw new DockerConfigError(`${where}: "${name}" must be a string`);
    return v;
  };
  const out: RegistryCredentials[] = [];
  const identityToken = field('identitytoken');
  if (identityToken) out.push({ kind: 'identity-token', token: identityToken });

  const auth = field('auth');
  let username = field('username');
  let password = field('password');
  if (auth) {
    const decoded = decodeBase64(auth.trim());
    const colon = decoded?.indexOf(':') ?? -1;
    if (decoded === undefined || colon === -1) throw new DockerConfigError(`${where}: "auth" is not base64 of user:password`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  // An identity token stands for the password: Docker writes the user name beside it, with no password.
  if (username && password) out.push({ kind: 'basic', username, password });
  return out;
}

function decodeBase64(text: string): string | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) && !/^[A-Za-z0-9_-]*={0,2}$/.test(text)) return undefined;
  return Buffer.from(text, text.includes('-') || text.includes('_') ? 'base64url' : 'base64').toString('utf8');
}

function lookupOf(entries: readonly Entry[]): RegistryCredentialLookup {
  return {
    registries: entries.map((e) => e.key),
    credentialsFor(registry: string): RegistryCredentials[] {
      const host = normalizeRegistryKey(registry);
      const exact = entries.filter((e) => !e.wildcard && e.key === host);
      const globbed = entries.filter((e) => e.wildcard && wildcardMatches(e.key, host));
      return [...exact, ...globbed].flatMap((e) => e.credentials);
    },
  };
}

/**
 * The kubelet's rule: equal ports, equally many labels, and each label equal
 * or matched by a glob where `*` is any run of characters within the label.
 */
function wildcardMatches(pattern: string, host: string): boolean {
  const [patternHost, patternPort] = splitPort(pattern);
  const [hostName, hostPort] = splitPort(host);
  if (patternPort !== hostPort) return false;
  const want = patternHost.split('.');
  const have = hostName.split('.');
  if (want.length !== have.length) return false;
  return want.every((label, i) => {
    const re = new RegExp(`^${label.split('*').map(escapeRegExp).join('[^.]*')}$`);
    return re.test(have[i] ?? '');
  });
}

function splitPort(host: string): [string, string] {
  const m = /^(.*?)(?::([0-9]+))?$/.exec(host);
  return [m?.[1] ?? host, m?.[2] ?? ''];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
