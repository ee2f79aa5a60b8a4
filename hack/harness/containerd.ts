/**
 * One containerd 1.6 per simulated node: its own root, state and sockets, so
 * several run side by side as root without touching the host's containerd.
 * Measured here: ready about 50 ms after spawn.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { unmountUnder } from './mounts.ts';
import { run, startProc, waitForSocket, type Proc } from './procs.ts';

export interface ContainerdInit {
  /** Directory for config, root, state, sockets and log; created if missing. */
  dir: string;
  /** Node name, for messages. */
  name: string;
  /** The CRI registry config_path: `<hostsDir>/<registry host[:port]>/hosts.toml`. */
  hostsDir: string;
  /**
   * Snapshotter for unpacking pulled images (default overlayfs, which works on
   * the ext4 root here; use native where overlay mounts are not allowed).
   */
  snapshotter?: 'overlayfs' | 'native';
}

export interface PullOptions {
  /** Mirror config to resolve with (default: this instance's hostsDir). */
  hostsDir?: string;
  /** ctr 1.6 talks https to a `server = "http://..."` without a [host] entry unless told so. */
  plainHttp?: boolean;
  allPlatforms?: boolean;
  /** `user:password` for the registry. */
  user?: string;
}

export interface Containerd {
  readonly name: string;
  /** gRPC socket. */
  readonly sock: string;
  readonly root: string;
  readonly state: string;
  readonly hostsDir: string;
  /** Where blobs lie on disk: `<contentPath>/blobs/sha256/<hex>`. */
  readonly contentPath: string;
  readonly namespace: 'k8s.io';
  /** Runs `ctr --address SOCK -n k8s.io ...args`; returns stdout; throws with stderr. */
  ctr(args: string[]): Promise<string>;
  /** Same, stdout as bytes (for `content get`). */
  ctrBytes(args: string[]): Promise<Buffer>;
  /** `ctr images pull --hosts-dir ...`; returns ctr's output. */
  pull(ref: string, opts?: PullOptions): Promise<string>;
  /** The pid of the daemon now (it changes when it restarts). */
  pid(): number;
  start(): Promise<void>;
  /** Stops the daemon and unmounts everything under root and state. */
  stop(): Promise<void>;
}

const NAMESPACE = 'k8s.io';
// sun_path is 108 bytes including the NUL.
const MAX_SOCKET_PATH = 107;

export async function startContainerd(init: ContainerdInit): Promise<Containerd> {
  const root = join(init.dir, 'root');
  const state = join(init.dir, 'state');
  const sock = join(init.dir, 'containerd.sock');
  const snapshotter = init.snapshotter ?? 'overlayfs';
  if (sock.length + '.ttrpc'.length > MAX_SOCKET_PATH) {
    throw new Error(`socket path too long for a unix socket (${sock}); set SHOAL_RUN_ROOT to a shorter directory`);
  }
  mkdirSync(root, { recursive: true });
  mkdirSync(state, { recursive: true });
  mkdirSync(init.hostsDir, { recursive: true });
  const configPath = join(init.dir, 'config.toml');
  writeFileSync(configPath, configToml({ root, state, sock, hostsDir: init.hostsDir, snapshotter }));

  let proc: Proc | undefined;
  const start = async (): Promise<void> => {
    if (proc?.running()) return;
    proc = await startProc({ name: 'containerd', dir: init.dir, command: 'containerd', args: ['--config', configPath] }, (p) =>
      waitForSocket(sock, { what: `containerd ${init.name}`, proc: p, timeoutMs: 20_000 }),
    );
  };
  await start();

  // ctr unpacks with its own default snapshotter unless told.
  const env = { ...process.env, CONTAINERD_SNAPSHOTTER: snapshotter };
  const ctrBytes = async (args: string[]): Promise<Buffer> =>
    (await run('ctr', ['--address', sock, '-n', NAMESPACE, ...args], { env })).stdout;
  const ctr = async (args: string[]): Promise<string> => (await ctrBytes(args)).toString('utf8');

  return {
    name: init.name,
    sock,
    root,
    state,
    hostsDir: init.hostsDir,
    contentPath: join(root, 'io.containerd.content.v1.content'),
    namespace: NAMESPACE,
    ctr,
    ctrBytes,
    pull: (ref, opts = {}) =>
      ctr([
        'images',
        'pull',
        '--hosts-dir',
        opts.hostsDir ?? init.hostsDir,
        ...(opts.plainHttp ? ['--plain-http'] : []),
        ...(opts.allPlatforms ? ['--all-platforms'] : []),
        ...(opts.user ? ['--user', opts.user] : []),
        ref,
      ]),
    pid: () => {
      if (!proc?.running()) throw new Error(`containerd ${init.name} is not running`);
      return proc.pid;
    },
    start,
    stop: async () => {
      await proc?.stop();
      const errors = [...(await unmountUnder(root)), ...(await unmountUnder(state))];
      if (errors.length > 0) throw new AggregateError(errors, `containerd ${init.name}: teardown left mounts`);
    },
  };
}

interface ConfigValues {
  root: string;
  state: string;
  sock: string;
  hostsDir: string;
  snapshotter: string;
}

function configToml(v: ConfigValues): string {
  // Disabled: snapshotters that cannot work here (they only log errors at start), and
  // the opt plugin, which would share /opt/containerd between instances.
  // The CRI plugin stays (it owns config_path); its stream server takes a random
  // loopback port, so instances do not collide.
  return `version = 2
root = ${JSON.stringify(v.root)}
state = ${JSON.stringify(v.state)}
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
]

[grpc]
  address = ${JSON.stringify(v.sock)}

[ttrpc]
  address = ${JSON.stringify(v.sock + '.ttrpc')}

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = ${JSON.stringify(v.snapshotter)}

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = ${JSON.stringify(v.hostsDir)}
`;
}
