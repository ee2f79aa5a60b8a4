/**
 * Mirror part 3 (issue 5), end to end: what no node holds comes from upstream
 * through the mirrors, one download per blob for the cluster, shared while it
 * downloads; a downloader killed mid-blob, a private upstream, and an
 * upstream that refuses, fails or goes silent never cost a pull that
 * containerd alone would have made.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type Cluster, type ClusterNode } from '../harness/cluster.ts';
import { assertHolds, pulledBlobs } from '../harness/pulled.ts';
import { readMetric } from '../harness/http.ts';
import { buildAndPush, type PushedImage } from '../harness/images.ts';
import type { Mirror } from '../harness/mirror.ts';
import { waitUntil } from '../harness/procs.ts';
import type { Registry } from '../harness/registry.ts';
import { createRunDir } from '../harness/runs.ts';
import { startUpstreamProxy, type UpstreamProxy } from '../harness/upstream-proxy.ts';

const MiB = 1 << 20;


function blobGets(registry: Registry, digest: string) {
  return registry.requests().filter((r) => r.method === 'GET' && r.path.split('?')[0]!.endsWith(`/blobs/${digest}`));
}

const sum = async (mirrors: Mirror[], name: string, labels: Record<string, string> = {}) =>
  (await Promise.all(mirrors.map((m) => readMetric(m.metricsUrl, name, labels)))).reduce((a, b) => a + b, 0);

/** Waits until every mirror is connected to every other: they then agree on each blob's downloader. */
const untilMeshed = (mirrors: Mirror[], peers: number) =>
  waitUntil(async () => (await Promise.all(mirrors.map((m) => readMetric(m.metricsUrl, 'shoal_live_peers')))).every((n) => n >= peers), {
    what: 'mirrors connected to each other',
    timeoutMs: 30_000,
    intervalMs: 200,
  });

describe('mirror part 3: upstream through the mirrors, one download per blob', function () {
  this.timeout(600_000);
  let proxy: UpstreamProxy;
  let cluster: Cluster;
  let nodes: ClusterNode[];
  let mirrors: Mirror[];

  /** Pushes to the registry; the returned refs name the proxy the nodes know upstream by. */
  const push = async (name: string, layers: number[]): Promise<PushedImage> => {
    const image = await buildAndPush({ dir: join(cluster.runDir, `img-${name}`), layers, registry: cluster.registry.host, repo: `up/${name}`, tag: 'v1' });
    return { ...image, registry: proxy.host, ref: `${proxy.host}/${image.repo}:v1`, digestRef: `${proxy.host}/${image.repo}@${image.digest}` };
  };

  before(async function () {
    proxy = await startUpstreamProxy();
    cluster = await startCluster({
      nodes: 4,
      mirrorArgs: ['--upstream-fallback', '--peer-idle-timeout', '1s', '--upstream-idle-timeout', '2s'],
      upstreamFront: (registry) => {
        proxy.target = registry.url;
        return proxy;
      },
    });
    nodes = cluster.nodes;
    mirrors = nodes.map((n) => n.mirror!);
    await untilMeshed(mirrors, 3);
  });

  after(async function () {
    await cluster?.stop();
    await proxy?.stop();
  });

  /** Each mirror's upstream bytes when the test began. */
  let bytesAtStart: number[] = [];
  beforeEach(async function () {
    bytesAtStart = await Promise.all(mirrors.map((m) => readMetric(m.metricsUrl, 'shoal_upstream_bytes_total', { registry: proxy.host })));
  });

  afterEach(function () {
    proxy.mode = { kind: 'pass' };
  });

  it('1. four nodes pull a new image at the same instant: every blob leaves upstream once, shared while it downloads', async function () {
    const image = await push('same-instant', [24 * MiB, 6 * MiB, MiB, 3000]);
    // Slow enough that every node asks while the downloads are under way.
    proxy.mode = { kind: 'pass', bytesPerSecond: 32 * MiB };
    await Promise.all(nodes.map((n) => n.containerd.pull(image.ref)));
    for (const node of nodes) await assertHolds(node, image);
    for (const blob of pulledBlobs(image).filter((b) => b.mediaType.includes('layer') || b.mediaType.includes('config'))) {
      const gets = blobGets(cluster.registry, blob.digest);
      assert.equal(gets.length, 1, `${blob.digest} (${blob.size} B) left upstream ${gets.length} times: ${JSON.stringify(gets)}`);
      assert.ok(gets[0]!.userAgent.startsWith('shoal'), `${blob.digest} was fetched by a mirror, not containerd: ${gets[0]!.userAgent}`);
    }
    const layerBytes = pulledBlobs(image).reduce((n, b) => n + b.size, 0);
    const upstreamBytes = await sum(mirrors, 'shoal_upstream_bytes_total', { registry: proxy.host });
    assert.ok(upstreamBytes >= layerBytes && upstreamBytes < 2 * layerBytes, `mirrors received ${upstreamBytes} B from upstream for ${layerBytes} B of content`);
    assert.ok((await sum(mirrors, 'shoal_spool_partial_peer_bytes_total')) > 0, 'peers were served from downloads in progress');
    assert.ok((await sum(mirrors, 'shoal_mirror_requests_total', { source: 'upstream', kind: 'blob' })) >= 4 * 3, 'every node got the blobs through its mirror');
  });

  it('2. the downloading node is killed mid-blob: the other nodes resume and complete, byte for byte', async function () {
    const image = await push('killed', [128 * MiB]);
    const layer = image.manifests[0]!.layers[0]!;
    proxy.mode = { kind: 'pass', bytesPerSecond: 32 * MiB };
    const started = Date.now();
    const pulls = nodes.map((n) => n.containerd.pull(image.ref));
    // The downloader is the only node receiving the big layer from upstream.
    let owner = -1;
    await waitUntil(
      async () => {
        const bytes = await Promise.all(mirrors.map((m) => readMetric(m.metricsUrl, 'shoal_upstream_bytes_total', { registry: proxy.host })));
        owner = bytes.findIndex((b, i) => b - bytesAtStart[i]! > 8 * MiB);
        return owner !== -1;
      },
      { what: 'a node downloading the 128 MiB layer', timeoutMs: 30_000, intervalMs: 50 },
    );
    await mirrors[owner]!.kill();
    const results = await Promise.allSettled(pulls);
    try {
      for (const [i, result] of results.entries()) {
        if (i === owner) continue;
        assert.equal(result.status, 'fulfilled', `${nodes[i]!.name}: ${result.status === 'rejected' ? String(result.reason) : ''}`);
        assert.ok((await nodes[i]!.containerd.ctrBytes(['content', 'get', layer.digest])).equals(image.bytes(layer.digest)), `${nodes[i]!.name} holds the layer`);
      }
      assert.ok(Date.now() - started < 120_000, 'the pulls finished in bounded time');
    } finally {
      await mirrors[owner]!.start();
      await untilMeshed(mirrors, 3);
    }
  });
  for (const [label, mode, code] of [
    // 429 and 403 first: 5xx and silence open the registry's circuit breaker for a while.
    ['answers 429', { kind: 'status', status: 429 }, '429'],
    ['answers 403', { kind: 'status', status: 403 }, '403'],
    ['answers 500', { kind: 'status', status: 500 }, '500'],
    ['goes silent', { kind: 'silent' }, 'unavailable'],
  ] as const) {
    it(`3. upstream ${label} to the mirrors: they answer 404 in bounded time and containerd pulls by itself`, async function () {
      const image = await push(`refused-${code}`, [2 * MiB, 1000]);
      const node = nodes[0]!;
      const metric = (c: string) => readMetric(node.mirror!.metricsUrl, 'shoal_upstream_requests_total', { registry: proxy.host, code: c });
      const codes = code === '500' ? ['500', 'circuit-open'] : code === 'unavailable' ? ['unavailable', 'circuit-open'] : [code];
      const counted = async () => (await Promise.all(codes.map(metric))).reduce((a, b) => a + b, 0);
      const was = await counted();
      proxy.mode = mode;
      const started = Date.now();
      await node.containerd.pull(image.ref);
      const seconds = (Date.now() - started) / 1000;
      assert.ok(seconds < 60, `the pull took ${seconds} s`);
      await assertHolds(node, image);
      assert.ok((await counted()) > was, `shoal_upstream_requests_total{code in ${codes.join(',')}} went up`);
      const layer = image.manifests[0]!.layers[0]!;
      assert.ok(blobGets(cluster.registry, layer.digest).every((r) => !r.userAgent.startsWith('shoal')), 'only containerd fetched the layer');
      // Nothing is left half-open: a new pull elsewhere still works once upstream is back.
      proxy.mode = { kind: 'pass' };
      await nodes[1]!.containerd.pull(image.ref);
    });
  }
});

describe('mirror part 3: a private upstream', function () {
  this.timeout(300_000);
  const user = { user: 'puller', password: 'secret-pw' };
  let cluster: Cluster;
  let credsFile: string;

  before(async function () {
    const runDir = await createRunDir();
    credsFile = join(runDir, 'registry-credentials.json');
    // Read at start: empty now, the registry's address is known only once it runs.
    writeFileSync(credsFile, JSON.stringify({ auths: {} }));
    cluster = await startCluster({ nodes: 2, runDir, registry: { htpasswd: user }, mirrorArgs: ['--upstream-fallback', '--registry-credentials-file', credsFile] });
    await untilMeshed(cluster.nodes.map((n) => n.mirror!), 1);
  });

  after(async function () {
    await cluster?.stop();
  });

  const push = (name: string) =>
    buildAndPush({ dir: join(cluster.runDir, `img-${name}`), layers: [3 * MiB, 1000], registry: cluster.registry.host, repo: `private/${name}`, tag: 'v1', credentials: user });

  it('without credentials the mirror answers 404 and containerd pulls with its own', async function () {
    const image = await push('own');
    const mirror = cluster.nodes[0]!.mirror!;
    const res = await fetch(`${mirror.url}/v2/${image.repo}/manifests/v1?ns=${cluster.registry.host}`, { method: 'HEAD' });
    assert.equal(res.status, 404);
    await cluster.nodes[0]!.containerd.pull(image.ref, { user: `${user.user}:${user.password}` });
    await assertHolds(cluster.nodes[0]!, image);
    assert.ok((await readMetric(mirror.metricsUrl, 'shoal_upstream_requests_total', { registry: cluster.registry.host, code: '401' })) > 0, 'the refusal is counted');
  });

  it('with --registry-credentials-file the mirrors pull through themselves, containerd with no credentials', async function () {
    const auth = Buffer.from(`${user.user}:${user.password}`).toString('base64');
    writeFileSync(credsFile, JSON.stringify({ auths: { [cluster.registry.host]: { auth } } }));
    for (const node of cluster.nodes) {
      await node.mirror!.stop();
      await node.mirror!.start();
    }
    await untilMeshed(cluster.nodes.map((n) => n.mirror!), 1);
    const image = await push('mirrored');
    await Promise.all(cluster.nodes.map((n) => n.containerd.pull(image.ref)));
    for (const node of cluster.nodes) await assertHolds(node, image);
    const layer = image.manifests[0]!.layers[0]!;
    const gets = blobGets(cluster.registry, layer.digest).filter((r) => r.status === 200);
    assert.equal(gets.length, 1, JSON.stringify(gets));
    assert.ok(gets[0]!.userAgent.startsWith('shoal'));
  });
});
