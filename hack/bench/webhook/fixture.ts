/**
 * What the webhook bench measures against: a two-node cluster from the harness
 * (registry, containerd and a mirror per node, one peer network), tags only
 * the nodes hold and tags only the registry holds, one serving certificate,
 * and four servers on it: the no-op echo reference and three webhook
 * processes, one per scenario: with peers and a long cache TTL (cache hits),
 * with peers and a 1 ms TTL (through peers), without peers and a 1 ms TTL
 * (upstream).
 *
 * A cache miss is a tag from a pool of distinct tags, taken in turn, on a
 * webhook whose TTL is 1 ms. Either alone falls short: one tag with a tiny TTL
 * lets a review that follows the last one within the TTL hit the cache, and
 * concurrent reviews of one tag share one resolution; a never-used tag for
 * every review costs the setup most of the run (containerd writes about 40
 * image records a second here, and each must be advertised). With the pool, a
 * tag comes back only after a pool's worth of reviews (tenths of a second at
 * least at these rates), long after its entry expired, and not while an
 * earlier review of it is still in flight unless that one stalls that long.
 * Every answer's resolved-by annotation shows it was no cache hit.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCertificateAuthority, issueServingCertificate, serviceDnsNames } from '../../../webhook/tls/self-signed.ts';
import { httpsRequest, SERVICE, SERVICE_HOST } from '../../../webhook/testing.ts';
import { startCluster, type Cluster } from '../../harness/cluster.ts';
import { buildAndPush, MEDIA, type PushedImage } from '../../harness/images.ts';
import { freePort, startProc, waitForHttp, waitForTcp, waitUntil, type Proc } from '../../harness/procs.ts';
import { createRunDir, REPO_ROOT } from '../../harness/runs.ts';
import type { Target } from './load.ts';
import { checkAnswer, reviewCase, type Pinning, type ReviewCase } from './reviews.ts';

export interface FixtureInit {
  /** Pairs of tags in each pool (a review takes one pair); more than the load connections. */
  tagPairs: number;
  /** Logs progress. */
  log: (line: string) => void;
}

/** A server under load: where to send reviews, and its pid for CPU readings. */
export interface Server {
  readonly name: 'echo' | 'shoal-cache' | 'shoal-peers' | 'shoal-upstream';
  readonly target: Target;
  readonly pid: number;
  readonly proc: Proc;
  /** The webhook's /metrics; undefined for the echo server. */
  readonly metricsUrl: string | undefined;
}

/** The images of one review: tag references, and what the webhook must pin them to. */
export interface PodImages {
  readonly refs: readonly string[];
  readonly pinned: readonly string[];
}

export interface Fixture {
  readonly runDir: string;
  readonly cluster: Cluster;
  /** The no-op reference. */
  readonly echo: Server;
  /** The webhook with peers and a 10 min TTL: cache hits. */
  readonly shoalCache: Server;
  /** The webhook with peers and a 1 ms TTL: resolution through peers. */
  readonly shoalPeers: Server;
  /** The webhook without peers and a 1 ms TTL: resolution by the registry. */
  readonly shoalUpstream: Server;
  /** The cache-hit pod: already resolved by shoalCache. */
  readonly hit: PodImages;
  /** Pairs of tags, each tag held by one node (not by the registry). */
  readonly peerPods: readonly PodImages[];
  /** Pairs of tags in the registry, each with a digest of its own (held by no node). */
  readonly upstreamPods: readonly PodImages[];
  /** Stops every process; removes the run directory when `remove`. */
  stop(remove: boolean): Promise<void>;
}

const NODE = join(REPO_ROOT, 'node_modules/.bin/node');
const KiB = 1024;
/** Image records per `ctr images tag` call, keeping its argument list short. */
const TAGS_PER_CTR = 200;
/** Registry PUTs and mirror HEADs in flight while preparing. */
const PREPARE_CONCURRENCY = 8;

export async function startFixture(init: FixtureInit): Promise<Fixture> {
  const runDir = await createRunDir();
  const procs: Proc[] = [];
  let cluster: Cluster | undefined;
  const stop = async (remove: boolean) => {
    await Promise.all(procs.map((p) => p.stop()));
    await cluster?.stop();
    if (remove) rmSync(runDir, { recursive: true, force: true });
  };
  try {
    const started = Date.now();
    // Info, not the harness's debug: a mirror logging every request would slow the peer answers measured.
    const c = await startCluster({ nodes: 2, runDir, mirrorLogLevel: 'info' });
    cluster = c;
    const registry = c.registry.host;
    const push = (repo: string, tag: string) => buildAndPush({ dir: join(runDir, 'images', repo.replace('/', '-')), layers: [64 * KiB], registry, repo, tag });
    const [app, sidecar, peerBase, upstreamBase] = await Promise.all([push('bench/app', '1.0'), push('bench/sidecar', '1.0'), push('bench/peer', 'base'), push('bench/up', 'base')]);
    const hit = { refs: [app.ref, sidecar.ref], pinned: [`${app.ref}@${app.digest}`, `${sidecar.ref}@${sidecar.digest}`] };

    const peerPods = await tagOnNodes(c, peerBase, init.tagPairs);
    const upstreamPods = await tagInRegistry(c.registry.url, upstreamBase, init.tagPairs);
    await waitAdvertised(c, peerBase, peerPods);
    init.log(`cluster, images and ${2 * peerPods.length} node tags + ${2 * upstreamPods.length} registry tags ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    const tlsDir = join(runDir, 'tls');
    mkdirSync(tlsDir, { recursive: true });
    const ca = createCertificateAuthority();
    const serving = issueServingCertificate(ca, { dnsNames: serviceDnsNames(SERVICE.name, SERVICE.namespace) });
    const certFile = join(tlsDir, 'tls.crt');
    const keyFile = join(tlsDir, 'tls.key');
    writeFileSync(certFile, serving.cert);
    writeFileSync(keyFile, serving.key, { mode: 0o600 });
    const tls = { ca: ca.certPem, certFile, keyFile };

    const mirrorPort = c.nodes[0]!.mirror!.host.split(':')[1]!;
    const peerFlags = (routerAddr: string) => [
      '--bootstrap-peers', c.nodes.map((n) => n.mirror!.routerHost).join(','),
      '--network-key-file', c.networkKeyFile!,
      '--router-addr', routerAddr,
      '--peer-registry-port', mirrorPort,
    ];
    // Each webhook's DHT client on an address of its own (off the nodes' 127.0.0.1x).
    const routerAddrs = [`127.0.0.90:${await freePort('127.0.0.90')}`, `127.0.0.91:${await freePort('127.0.0.91')}`];
    const [echo, shoalCache, shoalPeers, shoalUpstream] = await Promise.all([
      startEcho(runDir, tls, procs),
      // Longer than the run: no cache-hit review turns into a resolution.
      startWebhook('shoal-cache', runDir, tls, registry, ['--cache-ttl', '10m', ...peerFlags(routerAddrs[0]!)], procs),
      startWebhook('shoal-peers', runDir, tls, registry, ['--cache-ttl', '1ms', ...peerFlags(routerAddrs[1]!)], procs),
      startWebhook('shoal-upstream', runDir, tls, registry, ['--cache-ttl', '1ms'], procs),
    ]);

    // A webhook's DHT client joins the network after /readyz: wait until a peer answers through it.
    for (const server of [shoalCache, shoalPeers]) {
      await waitUntil(async () => (await reviewOnce(server, peerPods[0]!, 'peer')) === undefined, { what: `${server.name} resolving through peers`, proc: server.proc, timeoutMs: 30_000, intervalMs: 200 });
    }
    // The cache-hit pod (no node holds it), resolved once; from now on answered from the cache.
    const problem = await reviewOnce(shoalCache, hit, 'upstream');
    if (problem !== undefined) throw new Error(`${shoalCache.name} did not resolve the cache-hit pod: ${problem}`);
    return { runDir, cluster: c, echo, shoalCache, shoalPeers, shoalUpstream, hit, peerPods, upstreamPods, stop };
  } catch (err) {
    await stop(false).catch((teardown: unknown) => init.log(`teardown after failed start: ${String(teardown)}`));
    throw err;
  }
}

/** Pairs of tags of `base` on the nodes: tag i on node i % 2, image records only (no registry tag). */
async function tagOnNodes(cluster: Cluster, base: PushedImage, pairs: number): Promise<PodImages[]> {
  const nodes = cluster.nodes;
  await Promise.all(nodes.map((n) => n.containerd.pull(base.ref)));
  const refs = Array.from({ length: 2 * pairs }, (_, i) => `${base.registry}/${base.repo}:t${i}`);
  await Promise.all(
    nodes.map(async (node) => {
      const own = refs.filter((_, i) => i % nodes.length === node.index);
      for (let i = 0; i < own.length; i += TAGS_PER_CTR) await node.containerd.ctr(['images', 'tag', base.ref, ...own.slice(i, i + TAGS_PER_CTR)]);
    }),
  );
  return Array.from({ length: pairs }, (_, k) => {
    const two = refs.slice(2 * k, 2 * k + 2);
    return { refs: two, pinned: two.map((ref) => `${ref}@${base.digest}`) };
  });
}

/** Pairs of tags in the registry, each a variant of `base`'s manifest (an annotation naming the tag): a digest per tag. */
async function tagInRegistry(registryUrl: string, base: PushedImage, pairs: number): Promise<PodImages[]> {
  const manifest = JSON.parse(base.bytes(base.digest).toString('utf8')) as Record<string, unknown>;
  const tags = Array.from({ length: 2 * pairs }, (_, i) => `t${i}`);
  const pinned = new Array<string>(tags.length);
  await inParallel(tags.length, async (i) => {
    const tag = tags[i]!;
    const bytes = Buffer.from(JSON.stringify({ ...manifest, annotations: { 'dev.shoal.bench/tag': tag } }));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const res = await fetch(`${registryUrl}/v2/${base.repo}/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': MEDIA.manifest }, body: bytes });
    await res.body?.cancel();
    if (res.status !== 201 || res.headers.get('docker-content-digest') !== digest) throw new Error(`PUT ${base.repo}:${tag}: ${res.status}, digest ${res.headers.get('docker-content-digest')}, want ${digest}`);
    pinned[i] = `${base.registry}/${base.repo}:${tag}@${digest}`;
  });
  return Array.from({ length: pairs }, (_, k) => ({
    refs: [2 * k, 2 * k + 1].map((i) => `${base.registry}/${base.repo}:${tags[i]}`),
    pinned: pinned.slice(2 * k, 2 * k + 2),
  }));
}

/**
 * Until each node tag resolves through the other node's mirror: the registry
 * lacks these tags, so a 200 there means the holder advertised it and the DHT finds it.
 */
async function waitAdvertised(cluster: Cluster, base: PushedImage, pods: readonly PodImages[]): Promise<void> {
  const tags = pods.flatMap((p) => p.refs.map((ref) => ref.slice(ref.lastIndexOf(':') + 1)));
  const pending = new Set(tags.keys());
  await waitUntil(
    async () => {
      const now = [...pending];
      await inParallel(now.length, async (j) => {
        const i = now[j]!;
        const asker = cluster.nodes[(i + 1) % cluster.nodes.length]!.mirror!;
        const res = await fetch(`${asker.url}/v2/${base.repo}/manifests/${tags[i]}?ns=${encodeURIComponent(base.registry)}`, { method: 'HEAD' });
        if (res.status === 200 && res.headers.get('docker-content-digest') === base.digest) pending.delete(i);
      });
      return pending.size === 0;
    },
    { what: `${tags.length} node tags advertised`, timeoutMs: 60_000, intervalMs: 500 },
  );
}

/** Runs work(0..count-1), PREPARE_CONCURRENCY at a time. */
async function inParallel(count: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(PREPARE_CONCURRENCY, count) }, async () => {
      for (let i = next++; i < count; i = next++) await work(i);
    }),
  );
}

interface TlsFiles {
  readonly ca: string;
  readonly certFile: string;
  readonly keyFile: string;
}

async function startEcho(runDir: string, tls: TlsFiles, procs: Proc[]): Promise<Server> {
  const port = await freePort('127.0.0.1');
  const args = [join(REPO_ROOT, 'hack/bench/webhook/echo-server.ts'), '--addr', `127.0.0.1:${port}`, '--tls-cert-file', tls.certFile, '--tls-key-file', tls.keyFile];
  const proc = await startProc({ name: 'echo', dir: join(runDir, 'echo'), command: NODE, args, cwd: REPO_ROOT }, (p) =>
    waitForTcp('127.0.0.1', port, { what: 'echo server', proc: p, timeoutMs: 15_000 }),
  );
  procs.push(proc);
  return { name: 'echo', target: { port, ca: tls.ca, servername: SERVICE_HOST }, pid: proc.pid, proc, metricsUrl: undefined };
}

/** The webhook as deployed: `node webhook/main.ts` with certificate files, at the default log level, plus `extra` flags. */
async function startWebhook(name: Server['name'], runDir: string, tls: TlsFiles, registry: string, extra: string[], procs: Proc[]): Promise<Server> {
  const port = await freePort('127.0.0.1');
  const metricsPort = await freePort('127.0.0.1');
  const args = [
    join(REPO_ROOT, 'webhook/main.ts'),
    '--addr', `127.0.0.1:${port}`,
    '--metrics-addr', `127.0.0.1:${metricsPort}`,
    '--tls-cert-file', tls.certFile,
    '--tls-key-file', tls.keyFile,
    '--plain-http-registries', registry,
    ...extra,
  ];
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  const proc = await startProc({ name, dir: join(runDir, name), command: NODE, args, cwd: REPO_ROOT }, (p) =>
    waitForHttp(`${metricsUrl}/readyz`, { what: name, proc: p, timeoutMs: 30_000 }),
  );
  procs.push(proc);
  return { name, target: { port, ca: tls.ca, servername: SERVICE_HOST }, pid: proc.pid, proc, metricsUrl };
}

/** One review of a pod with these images over a fresh connection; what is wrong with the answer, or undefined. */
async function reviewOnce(server: Server, images: PodImages, by: Pinning['by']): Promise<string | undefined> {
  const c: ReviewCase = reviewCase(images.refs, { images: images.pinned, by });
  const res = await httpsRequest(server.target.port, { ca: server.target.ca, servername: server.target.servername, body: c.body, headers: { 'Content-Type': 'application/json' } });
  return checkAnswer(c, res.status, res.body);
}
