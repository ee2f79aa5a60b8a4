/**
 * One Shoal mirror process per simulated node, run from this checkout
 * (`node mirror/main.ts serve ...`) on the node's own loopback address.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Containerd } from './containerd.ts';
import { readMetric } from './http.ts';
import { freePort, run, startProc, waitForHttp, type Proc } from './procs.ts';
import { REPO_ROOT } from './runs.ts';

export interface MirrorInit {
  /** Directory for the mirror's data dir and log; created if missing. */
  dir: string;
  /** The node's address, e.g. 127.0.0.11. */
  ip: string;
  /** Registry API port (default: a free one on ip). */
  registryPort?: number;
  /** /metrics, /healthz, /readyz port (default: a free one on ip). */
  metricsPort?: number;
  containerd: Containerd;
  /** `--mirrored-registries` entries: `host[:port]` or `http://host:port`. */
  mirroredRegistries: string[];
  extraArgs?: string[];
  /** `--containerd-content-path` (default: the containerd's own; '' reads only through Content.Read). */
  contentPath?: string;
  /** The DHT's port on ip (default: a free one). */
  routerPort?: number;
  /** `--bootstrap-peers` entries (default none: a network of its own). */
  bootstrapPeers?: string[];
  /** `--network-key-file` (default none: an open network). */
  networkKeyFile?: string;
  /** `--peer-registry-port`: the registry port of the other nodes' mirrors (default: this mirror's own). */
  peerRegistryPort?: number;
  /** What start() waits for: `/readyz` (default) or only `/healthz`, for a mirror not expected to be ready. */
  waitFor?: 'ready' | 'healthy';
  /** Log level (default debug). */
  logLevel?: string;
  /** Environment variables set for the mirror process on top of this process's (runtime knobs: NODE_OPTIONS, MALLOC_ARENA_MAX). */
  env?: Record<string, string>;
  /** Runs node through this command, which must exec its arguments (e.g. a shell that enters a cgroup first). Default none. */
  commandPrefix?: string[];
}

export interface Mirror {
  /** `http://IP:PORT`: the registry API. */
  readonly url: string;
  /** `IP:PORT` */
  readonly host: string;
  /** `http://IP:MPORT` */
  readonly metricsUrl: string;
  readonly logPath: string;
  /** Starts again with the same flags and data dir (and `env` instead of the extra environment, when given); waits for /readyz. */
  start(env?: Record<string, string>): Promise<void>;
  stop(): Promise<void>;
  /** SIGKILL: a crash, no graceful close of connections in flight. */
  kill(): Promise<void>;
  /** `IP:PORT` of its DHT. */
  readonly routerHost: string;
  /** The libp2p peer id it announced at its last start (from its log). */
  peerId(): string;
  /** The pid of the mirror process now (it changes when the mirror restarts). */
  pid(): number;
  /** Runs the mirror's own `configure` command: it writes hosts.toml files under hostsDir that point at this mirror. */
  configureContainerd(hostsDir: string): Promise<void>;
}

const MAIN = join(REPO_ROOT, 'mirror', 'main.ts');

// The mirror needs Node >= 24 (type stripping); fall back to the npm-installed one.
function nodeBinary(): string {
  const major = Number(process.versions.node.split('.')[0]);
  return major >= 24 ? process.execPath : join(REPO_ROOT, 'node_modules', '.bin', 'node');
}

export async function startMirror(init: MirrorInit): Promise<Mirror> {
  const registryPort = init.registryPort ?? (await freePort(init.ip));
  const metricsPort = init.metricsPort ?? (await freePort(init.ip));
  const dataDir = join(init.dir, 'data');
  mkdirSync(dataDir, { recursive: true });
  const routerPort = init.routerPort ?? (await freePort(init.ip));
  const host = `${init.ip}:${registryPort}`;
  const routerHost = `${init.ip}:${routerPort}`;
  const metricsUrl = `http://${init.ip}:${metricsPort}`;
  const registries = init.mirroredRegistries.join(',');
  const logLevel = init.logLevel ?? 'debug';
  const args = [
    MAIN,
    'serve',
    '--registry-addr', host,
    '--metrics-addr', `${init.ip}:${metricsPort}`,
    '--containerd-sock', init.containerd.sock,
    '--containerd-namespace', init.containerd.namespace,
    '--containerd-content-path', init.contentPath ?? init.containerd.contentPath,
    '--mirrored-registries', registries,
    '--data-dir', dataDir,
    '--log-level', logLevel,
    '--router-addr', routerHost,
    '--peer-registry-port', String(init.peerRegistryPort ?? registryPort),
    ...(init.bootstrapPeers && init.bootstrapPeers.length > 0 ? ['--bootstrap-peers', init.bootstrapPeers.join(',')] : []),
    ...(init.networkKeyFile ? ['--network-key-file', init.networkKeyFile] : []),
    ...(init.extraArgs ?? []),
  ];

  let proc: Proc | undefined;
  let extraEnv = init.env;
  const start = async (nextEnv?: Record<string, string>): Promise<void> => {
    if (proc?.running()) return;
    if (nextEnv !== undefined) extraEnv = nextEnv;
    const env = extraEnv === undefined ? undefined : { ...process.env, ...extraEnv };
    const [command, ...prefixArgs] = [...(init.commandPrefix ?? []), nodeBinary()];
    proc = await startProc({ name: 'mirror', dir: init.dir, command, args: [...prefixArgs, ...args], cwd: REPO_ROOT, env }, (p) =>
      waitForHttp(`${metricsUrl}/${init.waitFor === 'healthy' ? 'healthz' : 'readyz'}`, { what: `mirror on ${host}`, proc: p, timeoutMs: 30_000 }),
    );
  };
  await start();

  return {
    url: `http://${host}`,
    host,
    routerHost,
    metricsUrl,
    peerId: () => {
      const lines = readFileSync(join(init.dir, 'mirror.log'), 'utf8').split('\n').filter((l) => l.includes('"mirror serving"'));
      const last = lines.at(-1);
      if (last === undefined) throw new Error(`mirror on ${host} has not logged its peer id`);
      return (JSON.parse(last) as { peerId: string }).peerId;
    },
    pid: () => {
      if (!proc?.running()) throw new Error(`mirror on ${host} is not running`);
      return proc.pid;
    },
    logPath: join(init.dir, 'mirror.log'),
    start,
    stop: async () => {
      await proc?.stop();
    },
    kill: async () => {
      if (!proc?.running()) return;
      process.kill(proc.pid, 'SIGKILL');
      await proc.exited;
    },
    configureContainerd: async (hostsDir) => {
      await run(nodeBinary(), [
        MAIN,
        'configure',
        '--containerd-registry-config-path', hostsDir,
        '--mirrored-registries', registries,
        '--mirror-target', `http://${host}`,
        '--log-level', logLevel,
      ]);
    },
  };
}

/**
 * Whether `mirror` finds `repo:tag` of `registry` through its peers now: a
 * HEAD by tag answered 200 and counted as from a peer, so neither its own
 * store nor upstream (the fallback resolves tags there too) answered it.
 */
export async function tagFromPeers(mirror: Mirror, registry: string, repo: string, tag: string): Promise<boolean> {
  const fromPeers = () => readMetric(mirror.metricsUrl, 'shoal_mirror_requests_total', { source: 'peer', kind: 'manifest' });
  const before = await fromPeers();
  const res = await fetch(`${mirror.url}/v2/${repo}/manifests/${tag}?ns=${encodeURIComponent(registry)}`, { method: 'HEAD' });
  await res.arrayBuffer();
  return res.status === 200 && (await fromPeers()) > before;
}
