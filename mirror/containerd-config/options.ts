import { UsageError } from '../../shared/cli.ts';
import type { MirroredRegistry } from '../../shared/registries.ts';

/** Options of `configure` and `cleanup`; the field names are the command-line flags'. */
export interface ContainerdConfigOptions {
  /** containerd's registry `config_path`; default `/etc/containerd/certs.d`. */
  readonly containerdRegistryConfigPath?: string;
  /** Registries to mirror (from `parseMirroredRegistries`); default `[]`, which means every registry, through `_default`. */
  readonly mirroredRegistries?: readonly MirroredRegistry[];
  /** URL containerd uses to reach this node's mirror, e.g. `http://10.0.0.7:5000`; required by `configure`, unused by `cleanup`. */
  readonly mirrorTarget?: string;
  /** Keep the existing hosts.toml's `server` and host entries, after the mirror; default `false`. */
  readonly prependExisting?: boolean;
}

export const containerdConfigDefaults = {
  containerdRegistryConfigPath: '/etc/containerd/certs.d',
  mirroredRegistries: [] as readonly MirroredRegistry[],
  prependExisting: false,
} as const;

/** One `<config-path>/<dir>/hosts.toml` to write. */
export interface HostsTarget {
  /** The registry host, or `_default`. */
  readonly host: string;
  /** The registry's real API, or undefined for `_default`, where containerd falls back to the pulled host itself. */
  readonly server: URL | undefined;
}

export interface ResolvedConfigureOptions {
  readonly configPath: string;
  readonly targets: readonly HostsTarget[];
  readonly mirror: URL;
  readonly prependExisting: boolean;
}

/** Validates the options; bad input throws a UsageError, which the CLI turns into exit code 2. */
export function resolveConfigureOptions(opts: ContainerdConfigOptions): ResolvedConfigureOptions {
  const mirror = parseMirrorTarget(opts.mirrorTarget);
  const registries = opts.mirroredRegistries ?? containerdConfigDefaults.mirroredRegistries;
  const seen = new Set<string>();
  for (const r of registries) {
    // The host becomes a directory name: parseMirroredRegistries guarantees this, a hand-made value may not.
    if (r.host === '' || r.host === '.' || r.host === '..' || r.host.includes('/') || r.host === '_default') {
      throw new UsageError(`--mirrored-registries: "${r.host}" is not a registry host[:port]`);
    }
    if (r.upstream.protocol !== 'http:' && r.upstream.protocol !== 'https:') {
      throw new UsageError(`--mirrored-registries: upstream of "${r.host}" must be http:// or https://`);
    }
    if (seen.has(r.host)) throw new UsageError(`--mirrored-registries: "${r.host}" is listed twice`);
    seen.add(r.host);
  }
  // containerd reads `_default` for any registry without a directory of its own; with no
  // `server` line it then pulls from the registry itself (hosts.go fills in the pulled host,
  // and registry-1.docker.io for docker.io), which is what an unlisted registry needs.
  const targets: HostsTarget[] = registries.length === 0
    ? [{ host: '_default', server: undefined }]
    : registries.map((r) => ({ host: r.host, server: r.upstream }));
  return {
    configPath: opts.containerdRegistryConfigPath ?? containerdConfigDefaults.containerdRegistryConfigPath,
    targets,
    mirror,
    prependExisting: opts.prependExisting ?? containerdConfigDefaults.prependExisting,
  };
}

function parseMirrorTarget(text: string | undefined): URL {
  if (text === undefined || text.trim() === '') {
    throw new UsageError('--mirror-target is required: the URL containerd uses to reach this node\'s mirror, e.g. http://10.0.0.7:5000');
  }
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    throw new UsageError(`--mirror-target "${text}" is not a URL; expected http://host:port or https://host:port`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`--mirror-target "${text}" must be http:// or https://`);
  }
  if (url.username || url.password || (url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
    throw new UsageError(`--mirror-target "${text}" must be scheme://host[:port] only`);
  }
  return url;
}
