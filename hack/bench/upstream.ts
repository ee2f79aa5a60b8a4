/**
 * Part 3, upstream fallback: a new image that no node holds, pulled cold
 * through a bandwidth-limited upstream (the registry on a throttled host, see
 * harness/netns.ts). Four kinds of measurement, each from cold, in an order
 * that turns every round so drift on the shared machine falls on all:
 *   - `direct-one`: one node, containerd alone (the reference: one node's cold pull);
 *   - `direct-all`: every node at once, containerd alone (what a rollout costs today);
 *   - `shoal-all`: every node at once through its mirror (upstream fallback on);
 *   - `shoal-one`: one node through its mirror (a lone pull must not be slower);
 *   - `floor-all`: every node at once, containerd alone, the link `nodes` times
 *     as fast: each node pulls as fast as a node alone, at no cost in CPU. No
 *     sharing of downloads can beat it on this machine, where every node's
 *     containerd runs on the same cores: it tells Shoal's cost from the machine's.
 * A Shoal measurement pulls an image of its own, never pulled before: the
 * cluster's first sight of it, as in a rollout. A containerd-alone one reuses
 * one image. Before each measurement every node is back to the same state:
 * the images of earlier measurements removed, and the disk synced. Left in
 * place, they made later rounds slower: the kernel writes a file's pages out
 * about 30 s after they were written, so the 1-2 GB a round writes landed on
 * the rounds after it (containerd took 1.2-1.8 times the CPU for the same pull,
 * measured).
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster, type Cluster, type ClusterNode } from '../harness/cluster.ts';
import { writeHostsToml } from '../harness/hosts.ts';
import { readMetric } from '../harness/http.ts';
import { buildAndPush, type PushedImage } from '../harness/images.ts';
import { createThrottledHost, type ThrottledHost } from '../harness/netns.ts';
import { run, waitUntil } from '../harness/procs.ts';
import { pulledBlobs } from '../harness/pulled.ts';
import { tearDown, type PartInit } from './local.ts';
import { childrenTicks, cpuTicks, systemShares, systemTicks } from './procstat.ts';
import { checkHolds, makeCold, type Pull } from './pulls.ts';
import { AS_SHIPPED, warmCompileCache } from './runtime-settings.ts';

export interface UpstreamConfig {
  nodes: number;
  imageLayers: number;
  imageLayerBytes: number;
  /** The upstream link's rate, both ways. */
  rateMbit: number;
  rounds: number;
}

export const UPSTREAM_KINDS = ['direct-one', 'shoal-all', 'direct-all', 'shoal-one', 'floor-all'] as const;
export type UpstreamKind = (typeof UPSTREAM_KINDS)[number];

export interface UpstreamRound {
  round: number;
  kind: UpstreamKind;
  position: number;
  image: string;
  pulls: Pull[];
  /** Until the last pull ended. */
  wallSeconds: number;
  /** Body bytes the registry sent during the measurement. */
  upstreamBytes: number;
  /** Blob GETs the registry answered, by digest: more than one for a digest is a second download. */
  blobGets: Record<string, number>;
  /** CPU of each node's mirror during the measurement, in cores. */
  mirrorCores: Record<string, number>;
  /** CPU of all containerd daemons, and of the `ctr` clients that pulled (they fetch and write the content), in cores. */
  containerdCores: number;
  ctrCores: number;
  /** Share of the machine's cores busy. */
  busy: number;
}

export interface UpstreamRun {
  rateMbit: number;
  nodes: string[];
  /** Bytes of one host-platform pull of the image (manifest, config, layers). */
  imageBytes: number | undefined;
  rounds: UpstreamRound[];
  runDir: string | undefined;
  error?: string;
  teardownError?: string;
}

export type UpstreamInit = PartInit<UpstreamConfig>;

export async function runUpstream(init: UpstreamInit): Promise<UpstreamRun> {
  const { config, signal, log } = init;
  const result: UpstreamRun = { rateMbit: config.rateMbit, nodes: [], imageBytes: undefined, rounds: [], runDir: undefined };
  let host: ThrottledHost | undefined;
  let cluster: Cluster | undefined;
  try {
    host = await createThrottledHost({ rateMbit: config.rateMbit });
    log(`  upstream on ${host.ip} behind tc tbf ${config.rateMbit} Mbit/s (namespace ${host.name})`);
    warmCompileCache();
    cluster = await startCluster({ nodes: config.nodes, registry: { host }, mirrorLogLevel: 'info', mirrorEnv: AS_SHIPPED.env });
    const c = cluster;
    result.runDir = c.runDir;
    result.nodes = c.nodes.map((n) => n.name);
    await waitUntil(async () => (await Promise.all(c.nodes.map((n) => readMetric(n.mirror!.metricsUrl, 'shoal_live_peers')))).every((p) => p >= config.nodes - 1), {
      what: 'mirrors connected to each other',
      timeoutMs: 60_000,
      intervalMs: 200,
    });
    const layers = Array.from({ length: config.imageLayers }, () => config.imageLayerBytes);
    let pushed = 0;
    const push = async (): Promise<PushedImage> => {
      const n = pushed++;
      return buildAndPush({ dir: join(c.runDir, `image-${n}`), layers, registry: c.registry.host, repo: `bench/rollout-${n}`, tag: 'v1' });
    };
    const started = performance.now();
    const direct = await push();
    // One image per Shoal measurement, pushed up front so no push competes with a pull.
    const fresh: PushedImage[] = [];
    for (let i = 0; i < 2 * config.rounds; i++) fresh.push(await push());
    result.imageBytes = pulledBlobs(direct).reduce((sum, b) => sum + b.size, 0);
    log(`  pushed ${pushed} images of ${config.imageLayers} x ${config.imageLayerBytes / 2 ** 20} MiB (${((performance.now() - started) / 1000).toFixed(1)} s)`);
    const directHosts = join(c.runDir, 'hosts-direct');
    writeHostsToml(directHosts, c.registry.host, { server: c.registry.url, serverAsHost: true });

    let lastShoal: PushedImage | undefined;
    for (let round = 1; round <= config.rounds; round++) {
      // Rotated each round: every kind comes early and late.
      const order = UPSTREAM_KINDS.map((_, i) => UPSTREAM_KINDS[(i + round - 1) % UPSTREAM_KINDS.length]!);
      for (const [position, kind] of order.entries()) {
        signal.throwIfAborted();
        const viaShoal = kind.startsWith('shoal');
        const image = viaShoal ? fresh.shift()! : direct;
        await Promise.all(c.nodes.map(async (n) => {
          await makeCold(n, direct);
          if (lastShoal !== undefined) await makeCold(n, lastShoal);
        }));
        if (viaShoal) lastShoal = image;
        await run('sync', []);
        await spoolsEmpty(c.nodes);
        const pullers = kind.endsWith('-one') ? [c.nodes[(round - 1) % c.nodes.length]!] : c.nodes;
        const wide = kind === 'floor-all';
        if (wide) await host.setRate(config.rateMbit * config.nodes);
        let r: Awaited<ReturnType<typeof measure>>;
        try {
          r = await measure(c, pullers, image, viaShoal ? undefined : directHosts, init.clockHz);
        } finally {
          if (wide) await host.setRate(config.rateMbit);
        }
        const row: UpstreamRound = { round, kind, position, image: image.ref, ...r };
        result.rounds.push(row);
        const problems = r.pulls.filter((p) => p.problem !== undefined).map((p) => `${p.node}: ${p.problem}`);
        log(`  round ${round}, ${kind}: ${r.wallSeconds.toFixed(1)} s, ${(r.upstreamBytes / 2 ** 20).toFixed(0)} MiB from upstream${problems.length > 0 ? `; ${problems.join('; ')}` : ''}`);
      }
    }
  } catch (err) {
    result.error = (err as Error).stack ?? String(err);
  } finally {
    result.teardownError = await tearDown(init, cluster);
    await host?.remove();
  }
  return result;
}

/** Until no mirror's spool holds anything: a blob left from the last measurement would make the next one warm. */
async function spoolsEmpty(nodes: ClusterNode[]): Promise<void> {
  await waitUntil(async () => (await Promise.all(nodes.map((n) => readMetric(n.mirror!.metricsUrl, 'shoal_spool_bytes')))).every((b) => b === 0), {
    what: 'the mirrors’ spools to empty',
    timeoutMs: 60_000,
    intervalMs: 250,
  });
  // The DHT may still name a node for a blob removed a moment ago: let the advertisers' withdrawals land.
  await sleep(500);
}

async function measure(c: Cluster, pullers: ClusterNode[], image: PushedImage, hostsDir: string | undefined, clockHz: number): Promise<Omit<UpstreamRound, 'round' | 'kind' | 'position' | 'image'>> {
  const logged = c.registry.requests().length;
  const pids = c.nodes.map((n) => n.mirror!.pid());
  const ticksBefore = pids.map(cpuTicks);
  const daemons = c.nodes.map((n) => n.containerd.pid());
  const daemonTicks = () => daemons.reduce((sum, pid) => sum + cpuTicks(pid), 0);
  const daemonsBefore = daemonTicks();
  const childrenBefore = childrenTicks();
  const systemBefore = systemTicks();
  const started = performance.now();
  const pulls = await Promise.all(
    pullers.map(async (node): Promise<Pull> => {
      let problem: string | undefined;
      try {
        await node.containerd.pull(image.ref, { hostsDir });
      } catch (err) {
        problem = `pull failed: ${(err as Error).message.split('\n').slice(-3).join(' ')}`;
      }
      const seconds = (performance.now() - started) / 1000;
      problem ??= await checkHolds(node, image);
      return { node: node.name, seconds, ...(problem === undefined ? {} : { problem }) };
    }),
  );
  const wallSeconds = Math.max(...pulls.map((p) => p.seconds));
  const busy = systemShares(systemBefore, systemTicks()).busy;
  const mirrorCores = Object.fromEntries(c.nodes.map((n, i) => [n.name, (cpuTicks(pids[i]!) - ticksBefore[i]!) / clockHz / wallSeconds]));
  const containerdCores = (daemonTicks() - daemonsBefore) / clockHz / wallSeconds;
  // The pulls' ctr clients and the checks after them (a few ctr calls): this process's finished children.
  const ctrCores = (childrenTicks() - childrenBefore) / clockHz / wallSeconds;
  const requests = c.registry.requests().slice(logged);
  const blobGets: Record<string, number> = {};
  for (const r of requests) {
    const m = /\/blobs\/(sha256:[0-9a-f]{64})/.exec(r.path);
    if (r.method === 'GET' && m !== null) blobGets[m[1]!] = (blobGets[m[1]!] ?? 0) + 1;
  }
  return { pulls, wallSeconds, upstreamBytes: requests.reduce((sum, r) => sum + r.bytes, 0), blobGets, mirrorCores, containerdCores, ctrCores, busy };
}
