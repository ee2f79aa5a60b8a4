/**
 * Mirrored registries as given on the command line: `host[:port]` (an https
 * upstream) or a URL `http://host:port` (a plain-http upstream, for tests and
 * in-cluster registries).
 */

/** One registry that Shoal mirrors. */
export interface MirroredRegistry {
  /** The name containerd and image references use: `docker.io`, `127.0.0.1:5000`. */
  readonly host: string;
  /** Where the registry's API really lives: `https://registry-1.docker.io`, `http://127.0.0.1:5000`. */
  readonly upstream: URL;
}

/** Docker Hub's API is not served at the name images use. */
const API_HOSTS: Readonly<Record<string, string>> = { 'docker.io': 'registry-1.docker.io' };

// host[:port]: DNS labels or an IPv4 address, or a bracketed IPv6 address; no path, no user.
const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

export function parseMirroredRegistry(entry: string): MirroredRegistry {
  const text = entry.trim();
  if (text.includes('://')) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new Error(`invalid registry URL "${entry}"`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new Error(`registry URL "${entry}" must be http:// or https://`);
    }
    if (url.username || url.password || (url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
      throw new Error(`registry URL "${entry}" must be scheme://host[:port] only`);
    }
    return { host: url.host, upstream: new URL(`${url.protocol}//${url.host}`) };
  }
  if (!HOST_RE.test(text)) throw new Error(`invalid registry "${entry}": expected host[:port] or http://host:port`);
  const port = text.match(/:([0-9]+)$/)?.[1];
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) {
    throw new Error(`invalid registry "${entry}": port out of range`);
  }
  const host = text.toLowerCase();
  return { host, upstream: new URL(`https://${API_HOSTS[host] ?? host}`) };
}

/** Parses a comma list; an empty list means "every registry" (the caller decides what that means). */
export function parseMirroredRegistries(list: string): MirroredRegistry[] {
  const entries = list.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const out: MirroredRegistry[] = [];
  for (const entry of entries) {
    const registry = parseMirroredRegistry(entry);
    if (out.some((r) => r.host === registry.host)) throw new Error(`registry "${registry.host}" is listed twice`);
    out.push(registry);
  }
  return out;
}
