/**
 * The advertiser against a real containerd 1.6 and a real registry: what it
 * advertises at start, what containerd's events change, what only the resync
 * can see, and the event stream surviving a containerd restart. The router is
 * in memory: what reaches the DHT is its own concern.
 */
import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type Cluster, type ClusterNode } from '../harness/cluster.ts';
import { buildAndPush, hostPlatform, MEDIA, type PushedImage } from '../harness/images.ts';
import { run, waitUntil } from '../harness/procs.ts';
import { Advertiser, type AdvertiserContainerd } from '../../mirror/advertiser/advertiser.ts';
import { eventFilters } from '../../mirror/advertiser/event-stream.ts';
import type { ContainerdEvent } from '../../mirror/store/containerd/client.ts';
import { ContainerdStore } from '../../mirror/store/containerd/store.ts';
import { digestOf } from '../../shared/digest.ts';
import { createLogger, type Logger } from '../../shared/log.ts';
import { tagKey } from '../../shared/p2p/keys.ts';
import { MemoryNetwork, type MemoryRouter } from '../../shared/p2p/memory-router.ts';
import { parseMirroredRegistry, type MirroredRegistry } from '../../shared/registries.ts';

const MiB = 1 << 20;
/** Long enough that only events (or a reconnect) can explain a change seen within a test. */
const NO_RESYNC_MS = 10 * 60_000;

/** The keys a node holding `image` (its host-platform part, as `ctr pull` fetches it) advertises. */
function keysOf(image: PushedImage): string[] {
  const platform = hostPlatform();
  const manifest = image.manifests.find((m) => m.platform.os === platform.os && m.platform.architecture === platform.architecture);
  if (manifest === undefined) throw new Error(`${image.ref} has no ${platform.os}/${platform.architecture} manifest`);
  return [
    tagKey(image.registry, image.repo, image.tag),
    ...(image.mediaType === MEDIA.index ? [image.digest] : []),
    manifest.digest,
    manifest.config.digest,
    ...manifest.layers.map((l) => l.digest),
  ];
}

const sorted = (keys: Iterable<string>): string[] => [...keys].sort();

/** Polls a condition until it holds, failing after timeoutMs. */
function until(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
  return waitUntil(() => Promise.resolve(check()), { what, timeoutMs });
}

describe('advertiser: keys from a real containerd', function () {
  this.timeout(180_000);
  let cluster: Cluster;
  let node: ClusterNode;
  let store: ContainerdStore;
  let registry: MirroredRegistry;
  let logger: Logger;
  const network = new MemoryNetwork();
  let router: MemoryRouter;
  let advertiser: Advertiser;
  /** Pulled before start: a single manifest, and a two-platform index of which ctr fetches one platform. */
  let x: PushedImage;
  let y: PushedImage;
  /** Pulled after start, and after the restart. */
  let z: PushedImage;
  let w: PushedImage;

  before(async function () {
    cluster = await startCluster({ nodes: 1, mirrors: false });
    node = cluster.nodes[0]!;
    const host = cluster.registry.host;
    const dir = cluster.runDir;
    [x, y, z, w] = await Promise.all([
      buildAndPush({ dir: join(dir, 'img-x'), layers: [MiB, 3000], registry: host, repo: 'test/x', tag: 'v1' }),
      buildAndPush({
        dir: join(dir, 'img-y'),
        layers: [2000],
        platforms: [
          { os: 'linux', architecture: 'amd64' },
          { os: 'linux', architecture: 'arm64' },
        ],
        registry: host,
        repo: 'library/y',
        tag: '1.0',
      }),
      buildAndPush({ dir: join(dir, 'img-z'), layers: [4000, 5000], registry: host, repo: 'test/z', tag: 'v2' }),
      buildAndPush({ dir: join(dir, 'img-w'), layers: [6000], registry: host, repo: 'test/w', tag: 'v3' }),
    ]);
    // The harness's hosts.toml has only `server = "http://..."`: ctr 1.6 needs --plain-http for it.
    await node.containerd.pull(x.ref, { plainHttp: true });
    await node.containerd.pull(y.ref, { plainHttp: true });
    // The same image under a registry that is not mirrored: its tag must not be advertised.
    await node.containerd.ctr(['images', 'tag', x.ref, 'other.example:5000/test/x:v1']);

    const logPath = join(dir, 'advertiser.log');
    logger = createLogger({ level: 'debug', write: (line) => appendFileSync(logPath, line) });
    store = await ContainerdStore.open({ socket: node.containerd.sock, namespace: node.containerd.namespace, contentPath: node.containerd.contentPath, logger });
    registry = parseMirroredRegistry(cluster.registry.url);
    router = network.join({ peerId: 'node-0', host: node.ip });
    advertiser = new Advertiser({ containerd: store.client, store, router, mirroredRegistries: [registry], logger, resyncIntervalMs: NO_RESYNC_MS });
    await advertiser.start();
  });

  after(async function () {
    await advertiser?.stop();
    await store?.close();
    await cluster?.stop();
  });

  it('start advertises exactly the tags, indexes, manifests, configs and layers of the images pulled before', function () {
    const names = [x, y].map((i) => i.ref);
    assert.deepEqual(sorted(router.advertised()), sorted([...keysOf(x), ...keysOf(y)]), `for ${names.join(', ')}`);
    assert.deepEqual(sorted(advertiser.advertised()), sorted(router.advertised()));
    assert.equal(advertiser.status().tags, 2);
  });

  it('containerd 1.6 sends through the filters, decoded: image create, update and delete, content delete; k8s.io only', async function () {
    const client = store.client;
    const abort = new AbortController();
    const seen: ContainerdEvent[] = [];
    const stream = (async () => {
      for await (const event of client.subscribe(eventFilters(node.containerd.namespace), abort.signal)) seen.push(event);
    })();
    const tagged = `${x.registry}/test/x:events`;
    const blob = Buffer.from('an ingested blob, then removed');
    const blobDigest = digestOf(blob).text;
    const ctrIn = (namespace: string, args: string[], input?: Buffer) =>
      run('ctr', ['--address', node.containerd.sock, '-n', namespace, ...args], input === undefined ? {} : { input });
    try {
      // No response headers before the first event: subscribed is when an event comes through.
      const probe = (i: number) => `${x.registry}/test/probe:s${i}`;
      let probes = 0;
      await waitUntil(
        async () => {
          if (seen.length > 0) return true;
          await node.containerd.ctr(['images', 'tag', x.ref, probe(probes++)]);
          return false;
        },
        { what: 'the subscription', timeoutMs: 10_000, intervalMs: 100 },
      );
      const from = seen.length;
      // Another namespace: nothing of it may come through.
      await ctrIn('default', ['images', 'pull', '--plain-http', '--hosts-dir', node.hostsDir, x.ref]);
      await ctrIn('default', ['content', 'rm', x.manifests[0]!.config.digest]);
      await node.containerd.ctr(['images', 'tag', x.ref, tagged]);
      await node.containerd.ctr(['images', 'rm', tagged]);
      // Unreferenced content may be collected at once: a gc.root label keeps it until the rm (the label fails if it is gone).
      await waitUntil(
        async () => {
          await ctrIn('k8s.io', ['content', 'ingest', '--expected-digest', blobDigest, 'advertiser-test'], blob);
          await ctrIn('k8s.io', ['content', 'label', blobDigest, 'containerd.io/gc.root=advertiser-test']);
          return true;
        },
        { what: 'an ingested blob', timeoutMs: 10_000 },
      );
      await ctrIn('k8s.io', ['content', 'rm', blobDigest]);
      await until(() => seen.some((e) => e.decoded?.type === 'content-delete'), 'the content delete event', 2000);
      const events = seen
        .slice(from)
        // A probe's event may still arrive after the first one.
        .filter((e) => !(e.decoded !== undefined && 'name' in e.decoded && e.decoded.name.startsWith(`${x.registry}/test/probe:`)))
        .map((e) => ({ namespace: e.namespace, topic: e.topic, typeUrl: e.typeUrl, decoded: e.decoded }));
      console.log(`      ${events.length} events, e.g. ${JSON.stringify(events[0])}`);
      assert.deepEqual(events, [
        {
          namespace: 'k8s.io',
          topic: '/images/create',
          typeUrl: 'containerd.services.images.v1.ImageCreate',
          decoded: { type: 'image-create', name: tagged, labels: { 'io.cri-containerd.image': 'managed' } },
        },
        { namespace: 'k8s.io', topic: '/images/delete', typeUrl: 'containerd.services.images.v1.ImageDelete', decoded: { type: 'image-delete', name: tagged } },
        // Ingesting sends nothing in 1.6 (ContentCreate exists from 2.1).
        { namespace: 'k8s.io', topic: '/content/delete', typeUrl: 'containerd.events.ContentDelete', decoded: { type: 'content-delete', digest: blobDigest } },
      ]);
      assert.ok(seen.every((e) => e.timestamp instanceof Date && Math.abs(e.timestamp.getTime() - Date.now()) < 60_000));
      await node.containerd.ctr(['images', 'rm', ...Array.from({ length: probes }, (_, i) => probe(i))]);
    } finally {
      abort.abort();
      await stream;
    }
    // The advertiser followed all of it and is back where it was.
    const expected = JSON.stringify(sorted([...keysOf(x), ...keysOf(y)]));
    await until(() => JSON.stringify(sorted(router.advertised())) === expected, 'the tags withdrawn again', 2000);
  });

  it('an image pulled after start is advertised through containerd\'s events, long before any resync', async function () {
    const before = advertiser.status();
    await node.containerd.pull(z.ref, { plainHttp: true });
    const pulled = Date.now();
    await until(() => keysOf(z).every((k) => router.advertised().has(k)), `keys of ${z.ref}`, 2000);
    const took = Date.now() - pulled;
    assert.ok(advertiser.status().events > before.events, 'events were received');
    assert.deepEqual(sorted(router.advertised()), sorted([...keysOf(x), ...keysOf(y), ...keysOf(z)]));
    console.log(`      advertised ${z.ref} ${took} ms after ctr pull returned`);
  });

  it('ctr images rm withdraws the image\'s tag and content (an image event)', async function () {
    // The CRI plugin added a `sha256:<config>` record for the image too; remove every record of it.
    const records = (await store.client.listImages()).filter((i) => i.target.digest === z.digest).map((i) => i.name);
    assert.ok(records.includes(z.ref) && records.some((n) => n.startsWith('sha256:')), `records of z: ${records.join(', ')}`);
    await node.containerd.ctr(['images', 'rm', ...records]);
    await until(() => keysOf(z).every((k) => !router.advertised().has(k)), `withdrawal of ${z.ref}`, 2000);
    assert.deepEqual(sorted(router.advertised()), sorted([...keysOf(x), ...keysOf(y)]));
  });

  it('ctr content rm of a layer withdraws its key: containerd 1.6 sends /content/delete for it', async function () {
    const layer = x.manifests[0]!.layers[1]!.digest;
    const before = advertiser.status().events;
    await node.containerd.ctr(['content', 'rm', layer]);
    await until(() => !router.advertised().has(layer), `withdrawal of ${layer}`, 2000);
    assert.ok(advertiser.status().events > before);
    assert.deepEqual(sorted(router.advertised()), sorted([...keysOf(x), ...keysOf(y)].filter((k) => k !== layer)));
  });

  it('without content events (as from containerd 1.7), a short resync notices content removed by ctr content rm', async function () {
    const client = store.client;
    const imageEventsOnly: AdvertiserContainerd = {
      namespace: client.namespace,
      listImages: (filters) => client.listImages(filters),
      listContent: (filters) => client.listContent(filters),
      subscribe: (filters, signal) => client.subscribe(filters.filter((f) => !f.includes('/content/')), signal),
    };
    const router2 = network.join({ peerId: 'resync-only', host: node.ip });
    const resyncing = new Advertiser({
      containerd: imageEventsOnly,
      store,
      router: router2,
      mirroredRegistries: [registry],
      logger: logger.with({ advertiser: 'resync-only' }),
      resyncIntervalMs: 1000,
    });
    try {
      await resyncing.start();
      const layer = y.manifests.find((m) => m.platform.architecture === hostPlatform().architecture)!.layers[0]!.digest;
      assert.ok(router2.advertised().has(layer));
      const before = resyncing.status();
      await node.containerd.ctr(['content', 'rm', layer]);
      await until(() => !router2.advertised().has(layer), `withdrawal of ${layer} by resync`, 5000);
      const after = resyncing.status();
      assert.equal(after.events, before.events, 'no event was seen');
      assert.ok(after.syncs > before.syncs);
    } finally {
      await resyncing.stop();
    }
  });

  it('after containerd restarts, the event stream comes back and a later pull is seen through it', async function () {
    const restarted = Date.now();
    await node.containerd.stop();
    await node.containerd.start();
    // Back means: an event caused after the restart arrives. Each probe is a new tag.
    let probes = 0;
    const eventsBefore = advertiser.status().events;
    await waitUntil(
      async () => {
        if (advertiser.status().events > eventsBefore) return true;
        // Fails while containerd is still starting: waitUntil tries again.
        await node.containerd.ctr(['images', 'tag', x.ref, `${x.registry}/test/probe:p${probes++}`]);
        return false;
      },
      { what: 'an event after the restart', timeoutMs: 30_000, intervalMs: 200 },
    );
    // The resync after re-subscribing has run too.
    await until(() => (advertiser.status().lastSync?.getTime() ?? 0) > restarted && advertiser.status().lastError === undefined, 'a sync after the restart', 30_000);
    const before = advertiser.status();
    await node.containerd.pull(w.ref, { plainHttp: true });
    await until(() => keysOf(w).every((k) => router.advertised().has(k)), `keys of ${w.ref}`, 2000);
    assert.ok(advertiser.status().events > before.events);
    console.log(`      event stream back after ${probes} probe tag(s)`);
  });

  it('started while containerd is down, start() resolves and the advertiser catches up once containerd is up', async function () {
    const expected = sorted(advertiser.advertised());
    await node.containerd.stop();
    const router3 = network.join({ peerId: 'late', host: node.ip });
    const late = new Advertiser({ containerd: store.client, store, router: router3, mirroredRegistries: [registry], logger: logger.with({ advertiser: 'late' }), resyncIntervalMs: NO_RESYNC_MS });
    try {
      await late.start();
      assert.notEqual(late.status().lastError, undefined);
      assert.equal(router3.advertised().size, 0);
      await node.containerd.start();
      await until(() => late.status().lastError === undefined && late.status().syncs > 0, 'a sync once containerd is back', 15_000);
      assert.deepEqual(sorted(router3.advertised()), expected);
    } finally {
      await late.stop();
    }
  });

  it('stop() ends the stream and the timers; nothing is synced after', async function () {
    const began = Date.now();
    await advertiser.stop();
    assert.ok(Date.now() - began < 2000, `stop took ${Date.now() - began} ms`);
    const syncs = advertiser.status().syncs;
    await advertiser.sync();
    assert.equal(advertiser.status().syncs, syncs);
    // Stopping is not withdrawing: the router's owner closes it.
    assert.ok(router.advertised().size > 0);
  });
});
