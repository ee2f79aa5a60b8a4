/**
 * containerd's registry host config (`<hostsDir>/<registry>/hosts.toml`), the
 * file the CRI plugin reads via config_path and `ctr images pull --hosts-dir` reads
 * too. Hosts are tried in file order, then `server`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface HostsConfig {
  /** The upstream, e.g. `http://127.0.0.1:5000`. */
  server: string;
  /** Mirrors to try first, in order, e.g. `http://127.0.0.11:5001`. */
  mirrors?: string[];
  /**
   * Also list the server as a `[host]` entry: containerd 1.6's ctr contacts a bare
   * `server = "http://..."` over https unless given --plain-http, but uses the
   * scheme of a [host] entry as written.
   */
  serverAsHost?: boolean;
}

/** Writes `<hostsDir>/<registryHost>/hosts.toml`; returns its path. */
export function writeHostsToml(hostsDir: string, registryHost: string, config: HostsConfig): string {
  const hosts = [...(config.mirrors ?? []), ...(config.serverAsHost ? [config.server] : [])];
  const text =
    `server = ${JSON.stringify(config.server)}\n` +
    hosts.map((h) => `\n[host.${JSON.stringify(h)}]\n  capabilities = ["pull", "resolve"]\n`).join('');
  const dir = join(hostsDir, registryHost);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'hosts.toml');
  writeFileSync(path, text);
  return path;
}
