/**
 * What the bench measures, built from the harness: an upstream registry, one
 * containerd node holding a large random blob and a small pulled image, two
 * mirrors on that node (reading files, and reading only through containerd's
 * Content.Read), and nginx serving the very same blob file.
 */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { startCluster, type Cluster, type ClusterNode } from '../harness/cluster.ts';
import { buildAndPush, type PushedImage } from '../harness/images.ts';
import { startMirror, type Mirror } from '../harness/mirror.ts';
import { stopAll } from '../harness/procs.ts';
import { livePidsUnder } from '../harness/runs.ts';
import { ingestRandomBlob, type IngestedBlob } from './blob.ts';
import { createMemoryCgroup, type MemoryCgroup } from './cgroup.ts';
import type { HeadTarget } from './head.ts';
import { startNginx, type Nginx } from './nginx.ts';
import { childPids } from './procstat.ts';
import { AS_SHIPPED, GET_SETTINGS, warmCompileCache, type RuntimeSetting } from './runtime-settings.ts';
import type { Server } from './throughput.ts';

/** The servers compared, by their names in tables and JSON. */
/**
 * `files` runs as shipped: after the warm-up round its reads find the file's
 * digest check remembered and hash nothing. `hashed` waits for a pass over
 * the file on every read, as the first read of a file does.
 */
export const SERVERS = {
  nginx: 'nginx (sendfile)',
  files: 'mirror (files)',
  hashed: 'mirror (files), each read hashed (--content-check-ttl=0)',
  grpc: 'mirror (Content.Read)',
} as const;
/** The HEAD series' reference: nginx answering for a static copy of the manifest. */
export const HEAD_REFERENCE = 'nginx (static file)';

/** A mirror reading files like SERVERS.files, run with a runtime setting. */
export function settingServer(setting: RuntimeSetting): string {
  return `${SERVERS.files}, ${setting.name}`;
}

export interface FixtureInit {
  blobBytes: number;
  /** Seed of the blob's bytes: the same seed and size, the same digest. */
  seed: string;
  /** Progress lines. */
  log: (line: string) => void;
}

export interface Fixture {
  readonly runDir: string;
  readonly node: ClusterNode;
  readonly blob: IngestedBlob;
  /** A small image containerd pulled, so its tag has an image record. */
  readonly image: PushedImage;
  /** Reads blobs from containerd's content directory (the default). */
  readonly filesMirror: Mirror;
  /** Reads blobs only through containerd's Content.Read. */
  readonly grpcMirror: Mirror;
  /** Like filesMirror, each with a runtime setting (GET only: their memory beside filesMirror's). */
  readonly settingMirrors: { setting: RuntimeSetting; mirror: Mirror }[];
  readonly nginx: Nginx;
  /** GET of the blob: nginx, the two mirrors, then the mirrors with runtime settings. */
  readonly servers: Server[];
  /** HEAD of the image's manifest: nginx's static copy, then the two mirrors by tag. */
  readonly headTargets: HeadTarget[];
  /** The mirror processes, by server name. */
  readonly mirrorPids: Record<string, number>;
  /** Their /metrics base URLs, by server name. */
  readonly mirrorMetrics: Record<string, string>;
  /** Stops everything, nginx and mirrors first; throws if anything stays running or mounted. */
  stop(): Promise<void>;
}

/** Nothing else on the bench's loopback addresses: the cluster uses .1 and .10 upwards. */
const NGINX_IP = '127.0.0.5';

export async function startFixture(init: FixtureInit): Promise<Fixture> {
  const step = async <T>(what: string, work: () => Promise<T>): Promise<T> => {
    const started = Date.now();
    const result = await work();
    init.log(`  ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return result;
  };

  let cluster: Cluster | undefined;
  let filesMirror: Mirror | undefined;
  let grpcMirror: Mirror | undefined;
  let hashedMirror: Mirror | undefined;
  let nginx: Nginx | undefined;
  const settingMirrors: { setting: RuntimeSetting; mirror: Mirror }[] = [];
  const cgroups: MemoryCgroup[] = [];
  const stop = async (): Promise<void> => {
    try {
      await stopAll(nginx, grpcMirror, hashedMirror, filesMirror, ...settingMirrors.map((s) => s.mirror));
    } finally {
      for (const cg of cgroups) cg.remove();
    }
    await cluster?.stop();
  };

  try {
    // The mirrors are started below, with the bench's own flags; pulls go straight to upstream.
    cluster = await step('registry and containerd started', () => startCluster({ nodes: 1, mirrors: false }));
    const node = cluster.nodes[0]!;
    const registry = cluster.registry;
    const runDir = cluster.runDir;
    const blob = await step(`${init.blobBytes / 2 ** 20} MiB random blob ingested into containerd`, () =>
      ingestRandomBlob(node.containerd, init.blobBytes, init.seed),
    );
    const image = await step('small image pushed and pulled by containerd', async () => {
      const pushed = await buildAndPush({ dir: join(runDir, 'img-head'), layers: [4096], registry: registry.host, repo: 'bench/head', tag: 'v1' });
      await node.containerd.pull(pushed.ref, { plainHttp: true });
      return pushed;
    });
    warmCompileCache();
    const mirrorInit = { ip: node.ip, containerd: node.containerd, mirroredRegistries: [registry.url], logLevel: 'info' };
    // One after the other: a failed start then never leaves the other one running unseen.
    filesMirror = await step('mirror reading files started', () => startMirror({ ...mirrorInit, dir: join(node.dir, 'mirror-files'), env: AS_SHIPPED.env }));
    hashedMirror = await step('mirror reading files started, each read hashed', () =>
      startMirror({ ...mirrorInit, dir: join(node.dir, 'mirror-hashed'), extraArgs: ['--content-check-ttl', '0'], env: AS_SHIPPED.env }),
    );
    grpcMirror = await step('mirror reading through Content.Read started', () =>
      startMirror({ ...mirrorInit, dir: join(node.dir, 'mirror-grpc'), contentPath: '', env: AS_SHIPPED.env }),
    );
    for (const [i, setting] of GET_SETTINGS.entries()) {
      let commandPrefix: string[] | undefined;
      if (setting.memoryLimitBytes !== undefined) {
        const cg = createMemoryCgroup(`get-${i}`, setting.memoryLimitBytes);
        cgroups.push(cg);
        commandPrefix = cg.commandPrefix;
      }
      const mirror = await step(`mirror reading files started, ${setting.name}`, () =>
        startMirror({ ...mirrorInit, dir: join(node.dir, `mirror-setting-${i}`), env: setting.env, commandPrefix }),
      );
      settingMirrors.push({ setting, mirror });
    }
    const www = join(runDir, 'nginx', 'www');
    mkdirSync(www, { recursive: true });
    // The same inode the mirrors read, so all three servers read the same cached pages.
    symlinkSync(blob.path, join(www, 'blob'));
    writeFileSync(join(www, 'manifest.json'), image.bytes(image.digest));
    nginx = await step('nginx started', () => startNginx({ dir: join(runDir, 'nginx'), ip: NGINX_IP, root: www, readyPath: 'manifest.json' }));

    const pidOf = (dir: string): number => {
      const live = livePidsUnder(dir);
      if (live.length !== 1) throw new Error(`want one live process under ${dir}, found ${live.length}`);
      return live[0]!.pid;
    };
    const mirrorPids: Record<string, number> = {
      [SERVERS.files]: pidOf(join(node.dir, 'mirror-files')),
      [SERVERS.hashed]: pidOf(join(node.dir, 'mirror-hashed')),
      [SERVERS.grpc]: pidOf(join(node.dir, 'mirror-grpc')),
    };
    const mirrorMetrics: Record<string, string> = { [SERVERS.files]: filesMirror.metricsUrl, [SERVERS.hashed]: hashedMirror.metricsUrl, [SERVERS.grpc]: grpcMirror.metricsUrl };
    for (const [i, { setting, mirror }] of settingMirrors.entries()) {
      mirrorPids[settingServer(setting)] = pidOf(join(node.dir, `mirror-setting-${i}`));
      mirrorMetrics[settingServer(setting)] = mirror.metricsUrl;
    }
    const containerdPid = pidOf(join(node.dir, 'containerd'));
    const nginxPid = nginx.pid;
    const blobPath = `/v2/bench/blob/blobs/${blob.digest}`;
    const servers: Server[] = [
      { name: SERVERS.nginx, blobUrl: `${nginx.url}/blob`, processes: () => [nginxPid, ...childPids(nginxPid)].map((pid) => ({ label: 'nginx', pid })) },
      { name: SERVERS.files, blobUrl: filesMirror.url + blobPath, processes: () => [{ label: 'mirror', pid: mirrorPids[SERVERS.files]!, byThread: true }] },
      { name: SERVERS.hashed, blobUrl: hashedMirror.url + blobPath, processes: () => [{ label: 'mirror', pid: mirrorPids[SERVERS.hashed]!, byThread: true }] },
      {
        name: SERVERS.grpc,
        blobUrl: grpcMirror.url + blobPath,
        processes: () => [
          { label: 'mirror', pid: mirrorPids[SERVERS.grpc]!, byThread: true },
          { label: 'containerd', pid: containerdPid },
        ],
      },
      ...settingMirrors.map(({ setting, mirror }): Server => {
        const name = settingServer(setting);
        return { name, blobUrl: mirror.url + blobPath, processes: () => [{ label: 'mirror', pid: mirrorPids[name]!, byThread: true }] };
      }),
    ];

    // As containerd resolves a tag: HEAD with ?ns=<registry host>.
    const tagPath = `/v2/${image.repo}/manifests/${image.tag}?ns=${image.registry}`;
    const size = String(image.size);
    const manifestCheck = (res: IncomingMessage): string | undefined => {
      if (res.statusCode !== 200) return `HTTP ${res.statusCode}`;
      const digest = res.headers['docker-content-digest'];
      if (digest !== image.digest) return `Docker-Content-Digest ${String(digest)}, want ${image.digest}`;
      if (res.headers['content-length'] !== size) return `Content-Length ${String(res.headers['content-length'])}, want ${size}`;
      return undefined;
    };
    const staticCheck = (res: IncomingMessage): string | undefined => {
      if (res.statusCode !== 200) return `HTTP ${res.statusCode}`;
      if (res.headers['content-length'] !== size) return `Content-Length ${String(res.headers['content-length'])}, want ${size}`;
      return undefined;
    };
    const headTargets: HeadTarget[] = [
      { name: HEAD_REFERENCE, base: nginx.url, path: '/manifest.json', check: staticCheck },
      { name: SERVERS.files, base: filesMirror.url, path: tagPath, check: manifestCheck },
      { name: SERVERS.grpc, base: grpcMirror.url, path: tagPath, check: manifestCheck },
    ];
    return { runDir, node, blob, image, filesMirror, grpcMirror, settingMirrors, nginx, servers, headTargets, mirrorPids, mirrorMetrics, stop };
  } catch (err) {
    await stop().catch((teardown: unknown) => init.log(`teardown after failed setup: ${String(teardown)}`));
    throw err;
  }
}
