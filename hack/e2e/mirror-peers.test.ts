/**
 * Mirror part 2, end to end: four nodes (containerd + mirror each) that find
 * content through the DHT and pull it from each other with upstream stopped,
 * and keep pulling correctly when peers restart, die mid-blob, lie, stall, or
 * lack the network key; deleted content stops being served.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { askOrder } from '../../shared/p2p/rendezvous.ts';
import { badPeerId, startBadPeer, type BadPeer } from '../harness/bad-peer.ts';
import { startCluster, type Cluster, type ClusterNode } from '../harness/cluster.ts';
import { assertHolds, pulledBlobs } from '../harness/pulled.ts';
import { readMetric } from '../harness/http.ts';
import { buildAndPush, type PushedImage } from '../harness/images.ts';
import { tagFromPeers, type Mirror } from '../harness/mirror.ts';
import { waitUntil } from '../harness/procs.ts';

const MiB = 1 << 20;


async function status(url: string, method = 'HEAD'): Promise<number> {
  const res = await fetch(url, { method });
  await res.arrayBuffer().catch(() => undefined);
  return res.status;
}

describe('mirror part 2: nodes pull from each other through the DHT', function () {
  this.timeout(300_000);
  let cluster: Cluster;
  let nodes: ClusterNode[];
  let mirrors: Mirror[];
  let x: PushedImage;
  let y: PushedImage;
  const badPeers: BadPeer[] = [];
  let registryPort: number;
  let routerPort: number;
  let badIp = 50;

  const upstreamDown = async <T>(body: () => Promise<T>): Promise<T> => {
    await cluster.registry.stop();
    try {
      return await body();
    } finally {
      await cluster.registry.start();
    }
  };
  const push = (name: string, layers: number[], platforms?: { os: string; architecture: string }[]) =>
    buildAndPush({ dir: join(cluster.runDir, `img-${name}`), layers, platforms, registry: cluster.registry.host, repo: `test/${name}`, tag: 'v1' });
  const blobUrl = (mirror: Mirror, image: PushedImage, digest: string) => `${mirror.url}/v2/${image.repo}/blobs/${digest}`;
  /** Waits until `mirror` finds every pulled blob of the image, and its tag, through peers (blobs asked without `?ns=`: never from upstream). */
  const untilFound = (mirror: Mirror, image: PushedImage) =>
    waitUntil(
      async () =>
        (await tagFromPeers(mirror, cluster.registry.host, image.repo, image.tag)) &&
        (await Promise.all(pulledBlobs(image).map((b) => status(blobUrl(mirror, image, b.digest))))).every((s) => s === 200),
      { what: `${image.ref} found through peers from ${mirror.url}`, timeoutMs: 30_000, intervalMs: 200 },
    );
  /** Where the next bad peer lives, and its peer id (its identity made ahead of its start). */
  const nextBad = async () => {
    const ip = `127.0.0.${badIp++}`;
    const dir = join(cluster.runDir, `bad-${ip}`);
    return { ip, dir, peerId: await badPeerId(dir) };
  };
  const startBad = async (mode: 'corrupt' | 'stall', blobs: Record<string, string>, withKey = true, at?: { ip: string; dir: string }) => {
    const { ip, dir } = at ?? (await nextBad());
    const peer = await startBadPeer({
      mode,
      dir,
      ip,
      registryPort,
      routerPort,
      bootstrapPeers: nodes.map((n) => n.mirror!.routerHost),
      networkKeyFile: withKey ? cluster.networkKeyFile : undefined,
      blobs,
    });
    badPeers.push(peer);
    return peer;
  };

  /**
   * Pushes a one-layer image (a new one each try) whose layer `asker` tries at
   * `first` before `then`: each node has its own order of a blob's holders.
   */
  const pushTriedFirst = async (name: string, layerBytes: number, asker: Mirror, first: string, then: string): Promise<PushedImage> => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const image = await push(`${name}-${attempt}`, [layerBytes]);
      const digest = image.manifests[0]!.layers[0]!.digest;
      if (askOrder([{ peerId: first }, { peerId: then }], asker.peerId(), digest)[0]!.peerId === first) return image;
    }
    throw new Error(`no image of 20 puts ${first} first for ${asker.peerId()}`);
  };

  before(async function () {
    // A short idle timeout keeps the stalling-peer case quick.
    cluster = await startCluster({ nodes: 4, mirrorArgs: ['--peer-idle-timeout', '1s'] });
    nodes = cluster.nodes;
    mirrors = nodes.map((n) => n.mirror!);
    registryPort = Number(mirrors[0]!.host.split(':')[1]);
    routerPort = Number(mirrors[0]!.routerHost.split(':')[1]);
    [x, y] = await Promise.all([
      push('x', [8 * MiB, MiB, 3000]),
      push('y', [2 * MiB], [
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 'arm64' },
      ]),
    ]);
    await nodes[0]!.containerd.pull(x.ref);
    await nodes[0]!.containerd.pull(y.ref, { allPlatforms: true });
    await untilFound(mirrors[1]!, x);
    await untilFound(mirrors[1]!, y);
  });

  after(async function () {
    for (const peer of badPeers) await peer.stop();
    await cluster?.stop();
  });

  it('1. with upstream stopped, nodes 2 and 3 pull X and Y by tag and by digest from node 1', async function () {
    await upstreamDown(async () => {
      await nodes[1]!.containerd.pull(x.ref);
      await nodes[1]!.containerd.pull(y.ref);
      await nodes[2]!.containerd.pull(x.digestRef);
      await nodes[2]!.containerd.pull(y.digestRef);
    });
    for (const node of [nodes[1]!, nodes[2]!]) {
      await assertHolds(node, x);
      await assertHolds(node, y);
      assert.ok((await readMetric(node.mirror!.metricsUrl, 'shoal_mirror_requests_total', { source: 'peer', kind: 'blob' })) >= 4, `${node.name} fetched blobs from peers`);
      assert.ok((await readMetric(node.mirror!.metricsUrl, 'shoal_mirror_requests_total', { source: 'peer', kind: 'manifest' })) >= 2, `${node.name} fetched manifests from peers`);
    }
  });

  it('2. node 1\'s mirror restarts with the same peer id and advertises again; empty node 4 pulls X from it alone', async function () {
    const id = mirrors[0]!.peerId();
    // Nodes 2 and 3 hold X too: with their mirrors away, only node 1 can serve it.
    await Promise.all([mirrors[1]!.stop(), mirrors[2]!.stop()]);
    try {
      await mirrors[0]!.stop();
      await mirrors[0]!.start();
      assert.equal(mirrors[0]!.peerId(), id);
      await waitUntil(async () => (await readMetric(mirrors[0]!.metricsUrl, 'shoal_advertised_keys')) >= pulledBlobs(x).length + 1, { what: 'node 1 advertising again', timeoutMs: 20_000 });
      await untilFound(mirrors[3]!, x);
      await upstreamDown(() => nodes[3]!.containerd.pull(x.ref));
      await assertHolds(nodes[3]!, x);
    } finally {
      await Promise.all([mirrors[1]!.start(), mirrors[2]!.start()]);
    }
  });

  it('3. the serving peer is killed mid-blob while another holds it: the blob completes, byte for byte', async function () {
    const v = await push('v', [128 * MiB]);
    const layer = v.manifests[0]!.layers[0]!;
    await nodes[0]!.containerd.pull(v.ref);
    await untilFound(mirrors[1]!, v);
    await nodes[1]!.containerd.pull(v.ref);
    await untilFound(mirrors[2]!, v);
    const served = (i: number) => readMetric(mirrors[i]!.metricsUrl, 'shoal_mirror_requests_total', { source: 'local', kind: 'blob' });
    const servedBy = () => Promise.all([served(0), served(1)]);
    const before = await servedBy();

    const res = await fetch(blobUrl(mirrors[2]!, v, layer.digest));
    assert.equal(res.status, 200);
    const reader = res.body!.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    const hash = createHash('sha256');
    let got = 0;
    // Read a little, then stop: backpressure holds the serving peer mid-blob.
    while (got < 2 * MiB) {
      const { done, value } = await reader.read();
      if (done) throw new Error('the blob ended early');
      hash.update(value);
      got += value.length;
    }
    const after = await servedBy();
    const serving = after[0] > before[0] ? 0 : 1;
    assert.ok(after[serving] > before[serving], 'one of the holders is serving');
    await mirrors[serving]!.kill();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        hash.update(value);
        got += value.length;
      }
      assert.equal(got, layer.size);
      assert.equal(`sha256:${hash.digest('hex')}`, layer.digest);
      const other = 1 - serving;
      assert.ok((await served(other)) > before[other]!, 'the other holder finished the blob');
    } finally {
      await mirrors[serving]!.start();
    }
  });

  it('4. a peer with the network key that serves wrong bytes: pulls fail cleanly or complete from a good source; never a wrong blob, never a wedged node', async function () {
    const at = await nextBad();
    // Node 4 tries the liar before node 1: it is asked.
    const w = await pushTriedFirst('w', 4 * MiB, mirrors[3]!, at.peerId, mirrors[0]!.peerId());
    const layer = w.manifests[0]!.layers[0]!;
    const liar = await startBad('corrupt', { [layer.digest]: w.path(layer.digest) }, true, at);
    assert.ok(liar.reachedPeers(), 'the liar joined the network');
    const corrupt = () => Promise.all([0, 3].map((i) => readMetric(mirrors[i]!.metricsUrl, 'shoal_mirror_corrupt_content_total', { source: 'peer' })));
    const corruptBefore = await corrupt();
    /**
     * A pull may fail once (wrong bytes cut short), and must then succeed: containerd
     * resumes an interrupted download, so the mirror must have dropped the bad partial.
     */
    const pullUntilGood = async (node: ClusterNode) => {
      for (let attempt = 1; ; attempt++) {
        try {
          await node.containerd.pull(w.ref);
          return;
        } catch (err) {
          const held = await node.containerd.ctrBytes(['content', 'get', layer.digest]).catch(() => undefined);
          assert.ok(held === undefined || held.equals(w.bytes(layer.digest)), 'containerd committed a wrong blob');
          if (attempt >= 3) throw err;
        }
      }
    };
    // Node 1 has only the liar to ask, then upstream; node 4 has node 1 and the liar, upstream down.
    await pullUntilGood(nodes[0]!);
    await untilFound(mirrors[3]!, w);
    await upstreamDown(() => pullUntilGood(nodes[3]!));
    await assertHolds(nodes[0]!, w);
    await assertHolds(nodes[3]!, w);
    assert.ok(liar.requests().some((r) => r.served), 'the liar was asked');
    const corruptAfter = await corrupt();
    assert.ok(corruptAfter[0]! + corruptAfter[1]! > corruptBefore[0]! + corruptBefore[1]!, 'the mismatch was caught');
  });

  it('5. a peer that stalls after its headers: the pull completes from another peer', async function () {
    const at = await nextBad();
    // Node 4 tries the staller before node 1: it is asked.
    const s = await pushTriedFirst('s', 6 * MiB, mirrors[3]!, at.peerId, mirrors[0]!.peerId());
    const layer = s.manifests[0]!.layers[0]!;
    const staller = await startBad('stall', { [layer.digest]: s.path(layer.digest) }, true, at);
    await nodes[0]!.containerd.pull(s.ref);
    await untilFound(mirrors[3]!, s);
    const idleBefore = await readMetric(mirrors[3]!.metricsUrl, 'shoal_peer_fetch_failures_total', { reason: 'idle' });
    await upstreamDown(() => nodes[3]!.containerd.pull(s.ref));
    await assertHolds(nodes[3]!, s);
    assert.ok(staller.requests().some((r) => r.served), 'the staller was asked');
    assert.ok((await readMetric(mirrors[3]!.metricsUrl, 'shoal_peer_fetch_failures_total', { reason: 'idle' })) > idleBefore, 'the stall was cut');
  });

  it('6. a process without the network key can neither join nor advertise', async function () {
    const bytes = randomBytes(MiB);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const file = join(cluster.runDir, 'intruder-blob');
    writeFileSync(file, bytes);
    const intruder = await startBad('corrupt', { [digest]: file }, false);
    assert.equal(intruder.reachedPeers(), false, 'no member took its records');
    const started = performance.now();
    const res = await fetch(`${mirrors[1]!.url}/v2/test/x/blobs/${digest}`);
    assert.equal(res.status, 404);
    assert.ok(performance.now() - started < 1000, 'answered within the resolve timeout and a margin');
    assert.deepEqual(intruder.requests(), [], 'nobody was sent to it');
  });

  it('7. an image deleted on node 1 (image removed, content collected) stops being advertised; others get a quick 404', async function () {
    const q = await push('q', [3 * MiB]);
    const layer = q.manifests[0]!.layers[0]!;
    await nodes[0]!.containerd.pull(q.ref);
    await untilFound(mirrors[1]!, q);
    const advertised = await readMetric(mirrors[0]!.metricsUrl, 'shoal_advertised_keys');
    // Every record that names q: the tag, and the config-digest record the CRI plugin adds.
    const records = (await nodes[0]!.containerd.ctr(['images', 'ls', '-q'])).split('\n').filter((r) => r === q.ref || r === q.manifests[0]!.config.digest);
    await nodes[0]!.containerd.ctr(['images', 'rm', '--sync', ...records]);
    await assert.rejects(nodes[0]!.containerd.ctrBytes(['content', 'get', layer.digest]), 'content collected');
    await waitUntil(async () => (await readMetric(mirrors[0]!.metricsUrl, 'shoal_advertised_keys')) <= advertised - 3, { what: 'node 1 withdrew q', timeoutMs: 70_000 });
    const started = performance.now();
    assert.equal(await status(blobUrl(mirrors[1]!, q, layer.digest), 'GET'), 404);
    assert.ok(performance.now() - started < 1000, 'a quick 404');
  });
});
