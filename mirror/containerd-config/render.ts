import type { DockerCertificates } from './docker-certs.ts';
import { splitHostsToml } from './split-hosts-toml.ts';

export interface HostsTomlInput {
  /** The `server` line, or undefined to leave it out (containerd then uses the pulled registry itself). */
  readonly server: URL | undefined;
  /** This node's mirror, tried first. */
  readonly mirror: URL;
  /** The user's own hosts.toml: its settings and host entries are kept after the mirror. */
  readonly existing?: string;
  /** TLS files for `server` found beside a directory with no hosts.toml (containerd stops reading them once there is one). */
  readonly serverCertificates?: DockerCertificates;
}

/** The mirror may serve pulls, never pushes: containerd must push to the real registry. */
const MIRROR_SECTION_BODY = '  capabilities = ["pull", "resolve"]';

/**
 * Renders a containerd hosts.toml (containerd's remotes/docker/config/hosts.go): `[host]`
 * entries are tried in file order, then `server`. Throws if `existing` cannot be split.
 */
export function renderHostsToml(input: HostsTomlInput): string {
  const mirrorSection = [`[host.${tomlString(origin(input.mirror))}]`, MIRROR_SECTION_BODY];
  if (input.existing === undefined) {
    const root = [
      ...(input.server === undefined ? [] : [`server = ${tomlString(origin(input.server))}`]),
      ...certificateLines(input.serverCertificates),
    ];
    return [...root, ...(root.length > 0 ? [''] : []), ...mirrorSection].join('\n') + '\n';
  }

  const layout = splitHostsToml(input.existing);
  // Hosts given as root keys (`host."x".ca = ...`) or in a bare `[host]` table would be
  // placed by containerd by their own line, not after ours: refuse rather than guess.
  if (layout.rootKeys.includes('host') || layout.sections.some((s) => s.path[0] === 'host' && s.path.length < 2)) {
    throw new Error('--prepend-existing supports hosts written as [host."URL"] tables only; rewrite the file that way or drop the flag');
  }
  const root = trimBlankEdges(layout.rootLines);
  if (input.server !== undefined && !layout.rootKeys.includes('server')) {
    root.unshift(`server = ${tomlString(origin(input.server))}`);
  }
  // A user entry for the mirror itself would be a duplicate table (invalid TOML) or a second try of the same host.
  const kept = layout.sections
    .filter((s) => !(s.path[0] === 'host' && s.path[1] !== undefined && sameEndpoint(s.path[1], input.mirror)))
    .flatMap((s) => s.lines);
  const parts = [root, mirrorSection, trimBlankEdges(kept)].filter((p) => p.length > 0);
  return parts.map((p) => p.join('\n')).join('\n\n') + '\n';
}

function certificateLines(certs: DockerCertificates | undefined): string[] {
  const lines: string[] = [];
  if (certs !== undefined && certs.ca.length > 0) lines.push(`ca = [${certs.ca.map(tomlString).join(', ')}]`);
  if (certs !== undefined && certs.client.length > 0) {
    lines.push(`client = [${certs.client.map((pair) => `[${pair.map(tomlString).join(', ')}]`).join(', ')}]`);
  }
  return lines;
}

/** A TOML basic string; JSON's escapes are a subset of TOML's. */
function tomlString(value: string): string {
  return JSON.stringify(value);
}

function origin(url: URL): string {
  return `${url.protocol}//${url.host}`;
}

/** Compares a `[host."..."]` key with the mirror as containerd reads it: https by default, `/v2` implied. */
function sameEndpoint(key: string, mirror: URL): boolean {
  let url: URL;
  try {
    url = new URL(key.startsWith('http') ? key : `https://${key}`);
  } catch {
    return false;
  }
  const path = url.pathname.replace(/\/+$/, '').replace(/\/v2$/, '');
  return url.protocol === mirror.protocol && url.host === mirror.host && path === '';
}

function trimBlankEdges(lines: readonly string[]): string[] {
  const out = [...lines];
  while (out.length > 0 && out[0]?.trim() === '') out.shift();
  while (out.length > 0 && out.at(-1)?.trim() === '') out.pop();
  return out;
}
