/**
 * A simulated cluster on loopback: one upstream registry on 127.0.0.1 and, per
 * node i, a containerd and (optionally) a Shoal mirror on 127.0.0.(10+i), with the
 * node's hosts.toml sending pulls of the upstream to its own mirror first.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { generateNetworkKey } from '../../shared/p2p/network-key.ts';
import { join } from 'node:path';
import { startContainerd, type Containerd } from './containerd.ts';
import { writeHostsToml } from './hosts.ts';
import { startMirror, type Mirror } from './mirror.ts';
import type { ThrottledHost } from './netns.ts';
import { mountsUnder } from './mounts.ts';
import { startRegistry, type Registry, type RegistryInit } from './registry.ts';
import { createRunDir, livePidsUnder } from './runs.ts';
import { freePort } from './procs.ts';

export interface ClusterInit {
  /** Number of nodes. */
  nodes: number;
  /** Run directory (default: a fresh one from createRunDir(), which first cleans up after dead runs). */
  runDir?: string;
  /** The upstream registry: basic auth; run on a throttled host (see netns.ts) instead of 127.0.0.1; served over TLS (see RegistryInit.tls). */
  registry?: { htpasswd?: { user: string; password: string }; host?: ThrottledHost; tls?: RegistryInit['tls'] };
  /**
   * A front the nodes know the upstream by (e.g. a proxy that misbehaves for
   * the mirrors): mirrored and configured in hosts.toml instead of the
   * registry, which stays reachable at its own address. Called once the
   * registry is up. Default none: the registry itself.
   */
  upstreamFront?: (registry: Registry) => { host: string; url: string };
  /** Start a mirror on each node (default true). */
  mirrors?: boolean;
  /** Extra mirror flags, the same for all nodes or per node. */
  mirrorArgs?: string[] | ((node: { index: number; ip: string }) => string[]);
  /** Extra environment variables for the mirror processes, the same for all nodes or per node. */
  mirrorEnv?: Record<string, string> | ((node: { index: number; ip: string }) => Record<string, string> | undefined);
  /** The mirrors' --log-level (default debug). */
  mirrorLogLevel?: string;
  /** A command the mirror's node process is run through, per node (see MirrorInit.commandPrefix). */
  mirrorCommandPrefix?: (node: { index: number; ip: string }) => string[] | undefined;
  /**
   * Who writes each node's hosts.toml: `harness` (default) writes server = upstream
   * plus a [host] for the node's own mirror; `mirror` runs the mirror's `configure`
   * command; `none` leaves it to the test.
   */
  hostsConfig?: 'harness' | 'mirror' | 'none';
  snapshotter?: 'overlayfs' | 'native';
  /**
   * The mirrors form one peer network (default true): the same registry and DHT
   * ports on every node's IP, a shared network key, every other node as a
   * bootstrap peer. False: each mirror is on its own.
   */
  peers?: boolean;
}

export interface ClusterNode {
  index: number;
  name: string;
  /** 127.0.0.(10+index) */
  ip: string;
  dir: string;
  hostsDir: string;
  containerd: Containerd;
  mirror: Mirror | undefined;
}

export interface Cluster {
  runDir: string;
  /** The network key file the mirrors share (peers: true). */
  networkKeyFile: string | undefined;
  registry: Registry;
  nodes: ClusterNode[];
  /** Stops everything; tries every part even when some fail, then throws one AggregateError. */
  stop(): Promise<void>;
}

export function nodeIp(index: number): string {
  return `127.0.0.${10 + index}`;
}

export async function startCluster(init: ClusterInit): Promise<Cluster> {
  const runDir = init.runDir ?? (await createRunDir());
  const nodes: ClusterNode[] = [];
  let registry: Registry | undefined;

  const stop = async (): Promise<void> => {
    const errors: unknown[] = [];
    const attempt = async (what: () => Promise<void> | undefined): Promise<void> => {
      try {
        await what();
      } catch (err) {
        errors.push(err);
      }
    };
    await Promise.all(nodes.map((n) => attempt(() => n.mirror?.stop())));
    await Promise.all(nodes.map((n) => attempt(() => n.containerd.stop())));
    await attempt(() => registry?.stop());
    const pids = livePidsUnder(runDir);
    if (pids.length > 0) errors.push(new Error(`still running: ${pids.map((p) => `${p.command}[${p.pid}]`).join(', ')}`));
    const mounts = mountsUnder(runDir);
    if (mounts.length > 0) errors.push(new Error(`still mounted: ${mounts.join(', ')}`));
    if (errors.length > 0) throw new AggregateError(errors, `cluster teardown in ${runDir}: ${errors.length} problem(s)`);
  };

  const peered = (init.mirrors ?? true) && (init.peers ?? true);
  // Peers reach each other's mirrors at host:--peer-registry-port, so one port for every node.
  const registryPort = peered ? await freePort(nodeIp(0)) : undefined;
  const routerPort = peered ? await freePort(nodeIp(0)) : undefined;
  let networkKeyFile: string | undefined;
  if (peered) {
    networkKeyFile = join(runDir, 'network.key');
    writeFileSync(networkKeyFile, generateNetworkKey(), { mode: 0o600 });
  }
  const routerOf = (index: number) => `${nodeIp(index)}:${routerPort}`;

  try {
    const throttled = init.registry?.host;
    registry = await startRegistry({ dir: join(runDir, 'registry'), htpasswd: init.registry?.htpasswd, host: throttled?.ip, commandPrefix: throttled?.exec, tls: init.registry?.tls });
    const upstream = init.upstreamFront?.(registry) ?? registry;
    // allSettled: on a failure, wait for the other nodes' starts before tearing down,
    // or a process spawned after stop() would outlive the run.
    const started = await Promise.allSettled(
      Array.from({ length: init.nodes }, async (_, index) => {
        const name = `node-${index}`;
        const dir = join(runDir, name);
        const hostsDir = join(dir, 'hosts');
        mkdirSync(dir, { recursive: true });
        const containerd = await startContainerd({ dir: join(dir, 'containerd'), name, hostsDir, snapshotter: init.snapshotter });
        const node: ClusterNode = { index, name, ip: nodeIp(index), dir, hostsDir, containerd, mirror: undefined };
        nodes.push(node);
        if (init.mirrors ?? true) {
          const extra = typeof init.mirrorArgs === 'function' ? init.mirrorArgs({ index, ip: node.ip }) : init.mirrorArgs;
          const env = typeof init.mirrorEnv === 'function' ? init.mirrorEnv({ index, ip: node.ip }) : init.mirrorEnv;
          node.mirror = await startMirror({
            dir: join(dir, 'mirror'),
            ip: node.ip,
            containerd,
            mirroredRegistries: [upstream.url],
            extraArgs: extra,
            env,
            logLevel: init.mirrorLogLevel,
            commandPrefix: init.mirrorCommandPrefix?.({ index, ip: node.ip }),
            registryPort,
            routerPort,
            peerRegistryPort: registryPort,
            networkKeyFile,
            bootstrapPeers: peered ? Array.from({ length: init.nodes }, (_, i) => i).filter((i) => i !== index).map(routerOf) : undefined,
          });
        }
        const mode = init.hostsConfig ?? 'harness';
        if (mode === 'harness') {
          writeHostsToml(hostsDir, upstream.host, { server: upstream.url, mirrors: node.mirror ? [node.mirror.url] : [] });
        } else if (mode === 'mirror' && node.mirror) {
          await node.mirror.configureContainerd(hostsDir);
        }
      }),
    );
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    // Leave nothing running behind a failed start; report the start error first.
    await stop().catch((teardown: unknown) => console.warn(`harness: teardown after failed start: ${String(teardown)}`));
    throw err;
  }
  if (!registry) throw new Error('unreachable: registry not started');
  nodes.sort((a, b) => a.index - b.index);
  return { runDir, networkKeyFile, registry, nodes, stop };
}
