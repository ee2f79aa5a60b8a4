/**
 * Three nodes pull the same image at once, every round from cold: from the
 * one node that holds it, through their mirrors, with upstream stopped (so
 * every byte comes from peers); and, as the reference in the same run,
 * straight from the local registry with no mirror in the way. The two kinds
 * alternate (A B, B A, ...) so drift on the shared machine falls on both.
 * `ctr images pull` fetches and unpacks, as the CRI plugin does for the kubelet.
 */
import { join } from 'node:path';
import type { ClusterNode } from '../harness/cluster.ts';
import { readMetric } from '../harness/http.ts';
import { writeHostsToml } from '../harness/hosts.ts';
import type { PushedImage } from '../harness/images.ts';
import type { Registry } from '../harness/registry.ts';
import { cpuTicks, systemShares, systemTicks } from './procstat.ts';

export type PullSource = 'peers' | 'upstream';

export interface Pull {
  node: string;
  /** From the round's common start to this pull's end. */
  seconds: number;
  /** What was wrong (pull failed, wrong digest, content missing); absent when the pull is good. */
  problem?: string;
}

export interface PullRound {
  round: number;
  source: PullSource;
  /** 0: first in its round. */
  position: number;
  pulls: Pull[];
  /** Until the last of the three finished. */
  wallSeconds: number;
  /** Content bytes each mirror served from its own containerd during the round (peers only): who the pullers got it from. */
  servedBytes: Record<string, number>;
  /** Bytes the upstream registry sent during the round. */
  upstreamBytes: number;
  /** CPU each node's mirror used during the round, in cores (1 = one core busy throughout). */
  mirrorCores: Record<string, number>;
  /** Share of the machine's cores busy during the round. */
  busy: number;
}

export interface PullInit {
  image: PushedImage;
  /** Holds the image; never cleaned. */
  holder: ClusterNode;
  pullers: ClusterNode[];
  /** Every node with a mirror, for who-served-what. */
  nodes: ClusterNode[];
  registry: Registry;
  /** The mirror process of a node now. */
  mirrorPid: (node: ClusterNode) => number;
  /** USER_HZ, for CPU times. */
  clockHz: number;
  rounds: number;
  /** Directory for the hosts.toml that sends pulls straight to the registry. */
  dir: string;
  signal: AbortSignal;
  onRound?: (round: PullRound) => void;
}

/** The blobs a host-platform pull of the image stores. */
function pulledDigests(image: PushedImage): string[] {
  const manifest = image.manifests[0]!;
  return [manifest.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
}

export async function measurePulls(init: PullInit): Promise<PullRound[]> {
  const directHosts = join(init.dir, 'hosts-direct');
  // A [host] entry, so ctr talks plain http to it as written (a bare server would be https).
  writeHostsToml(directHosts, init.registry.host, { server: init.registry.url, serverAsHost: true });
  const rounds: PullRound[] = [];
  try {
    for (let round = 1; round <= init.rounds; round++) {
      const order: PullSource[] = round % 2 === 1 ? ['peers', 'upstream'] : ['upstream', 'peers'];
      for (const [position, source] of order.entries()) {
        init.signal.throwIfAborted();
        await Promise.all(init.pullers.map((node) => makeCold(node, init.image)));
        if (source === 'peers') await init.registry.stop();
        else await init.registry.start();
        const r = await pullRound(init, round, position, source, source === 'peers' ? undefined : directHosts);
        rounds.push(r);
        init.onRound?.(r);
      }
    }
  } finally {
    await init.registry.start();
  }
  return rounds;
}

async function pullRound(init: PullInit, round: number, position: number, source: PullSource, hostsDir: string | undefined): Promise<PullRound> {
  const served = () => Promise.all(init.nodes.map((n) => readMetric(n.mirror!.metricsUrl, 'shoal_mirror_bytes_total', { source: 'local' })));
  const upstreamSent = () => init.registry.requests().reduce((sum, r) => sum + r.bytes, 0);
  const servedBefore = await served();
  const upstreamBefore = upstreamSent();
  const pids = init.nodes.map((n) => init.mirrorPid(n));
  const ticksBefore = pids.map(cpuTicks);
  const systemBefore = systemTicks();
  const started = performance.now();
  const pulls = await Promise.all(
    init.pullers.map(async (node): Promise<Pull> => {
      let problem: string | undefined;
      try {
        await node.containerd.pull(init.image.ref, { hostsDir });
      } catch (err) {
        problem = `pull failed: ${(err as Error).message.split('\n').slice(-3).join(' ')}`;
      }
      const seconds = (performance.now() - started) / 1000;
      problem ??= await checkHolds(node, init.image);
      return { node: node.name, seconds, ...(problem === undefined ? {} : { problem }) };
    }),
  );
  const wallSeconds = Math.max(...pulls.map((p) => p.seconds));
  const busy = systemShares(systemBefore, systemTicks()).busy;
  const mirrorCores = Object.fromEntries(init.nodes.map((n, i) => [n.name, (cpuTicks(pids[i]!) - ticksBefore[i]!) / init.clockHz / wallSeconds]));
  const servedAfter = await served();
  const servedBytes: Record<string, number> = {};
  for (const [i, n] of init.nodes.entries()) {
    const bytes = servedAfter[i]! - servedBefore[i]!;
    if (bytes !== 0) servedBytes[n.name] = bytes;
  }
  return { round, source, position, pulls, wallSeconds, servedBytes, upstreamBytes: upstreamSent() - upstreamBefore, mirrorCores, busy };
}

/** What is wrong with the node's copy of the image: its record's target, and every blob present (ctr checked each digest as it committed it). */
export async function checkHolds(node: ClusterNode, image: PushedImage): Promise<string | undefined> {
  const listed = (await node.containerd.ctr(['images', 'ls'])).split('\n').find((l) => l.startsWith(`${image.ref} `));
  if (listed === undefined) return `no image record ${image.ref}`;
  if (!listed.split(/\s+/).includes(image.digest)) return `image record points elsewhere: ${listed}`;
  const present = new Set((await node.containerd.ctr(['content', 'ls', '-q'])).split('\n'));
  const absent = pulledDigests(image).filter((d) => !present.has(d));
  return absent.length === 0 ? undefined : `content missing after the pull: ${absent.join(', ')}`;
}

/** Removes the image and, synchronously, its content and snapshots; fails if any of its blobs is left. */
export async function makeCold(node: ClusterNode, image: PushedImage): Promise<void> {
  // Every record that keeps the content: the tag, the digest reference, and the config-digest record the CRI plugin adds in k8s.io.
  const names = new Set([image.ref, image.digestRef, image.manifests[0]!.config.digest]);
  const records = (await node.containerd.ctr(['images', 'ls', '-q'])).split('\n').filter((r) => names.has(r));
  if (records.length > 0) await node.containerd.ctr(['images', 'rm', '--sync', ...records]);
  const present = new Set((await node.containerd.ctr(['content', 'ls', '-q'])).split('\n'));
  const left = pulledDigests(image).filter((d) => present.has(d));
  if (left.length > 0) throw new Error(`${node.name}: content left after removing ${image.ref}: ${left.join(', ')}`);
}
