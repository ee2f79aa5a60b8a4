import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Registry } from 'prom-client';
import { digestOf } from '../digest.ts';
import { silentLogger } from '../log.ts';
import { MEDIA_TYPES } from '../media-types.ts';
import { contentKey, tagKey } from '../p2p/keys.ts';
import { MemoryNetwork } from '../p2p/memory-router.ts';
import { ContentMismatchError } from '../verify.ts';
import { createMirrorMetrics, type MirrorMetrics } from '../../mirror/metrics.ts';
import { MemoryStore } from '../../mirror/store/memory-store.ts';
import { PeersExhaustedError } from './peer-blob.ts';
import { PeerSource, type PeerSourceInit } from './peer-source.ts';
import { badPeer, goodPeer, metricValue, notFoundPeer, TestPeers, type PeerHandler, type TestPeer } from './testing.ts';

const blob = randomBytes(256 * 1024);
const blobDigest = digestOf(blob);
const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: {}, layers: [] }));
const manifestDigest = digestOf(manifest);
const IDLE_MS = 300;

function goodStore(): MemoryStore {
  const store = new MemoryStore();
  store.chunkSize = 16 * 1024;
  store.put(blobDigest, blob);
  store.put(manifestDigest, manifest);
  store.tag({ registry: 'docker.io', name: 'library/nginx', tag: '1.27' }, { mediaType: MEDIA_TYPES.ociManifest, digest: manifestDigest, size: manifest.length });
  return store;
}

async function collect(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const chunk of body) out.push(chunk);
  return Buffer.concat(out);
}

const signal = () => AbortSignal.timeout(20_000);

describe('PeerSource', function () {
  this.timeout(20_000);
  let cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const fn of cleanup.reverse()) await fn();
    cleanup = [];
  });

  /** Peers in the order given, all advertising the test content; the source under test is a node of its own. */
  async function setup(handlers: (PeerHandler | undefined)[], init: Partial<PeerSourceInit> = {}): Promise<{ source: PeerSource; peers: TestPeer[]; metrics: MirrorMetrics }> {
    const { peers: servers, list } = await TestPeers.start(handlers);
    cleanup.push(() => servers.close());
    const network = new MemoryNetwork();
    for (const peer of list) network.join(peer.provider).advertise([contentKey(blobDigest), contentKey(manifestDigest), tagKey('docker.io', 'library/nginx', '1.27')]);
    const router = network.join({ peerId: 'self', host: '127.0.0.1' });
    const order = list.map((p) => p.provider.peerId);
    router.order = (found) => [...found].sort((a, b) => order.indexOf(a.peerId) - order.indexOf(b.peerId));
    const metrics = createMirrorMetrics(new Registry());
    const source = new PeerSource({ router, peerRegistryPort: servers.port, peerIdleTimeoutMs: IDLE_MS, logger: silentLogger, metrics, ...init });
    cleanup.push(() => source.close());
    return { source, peers: list, metrics };
  }

  async function fetchBlob(source: PeerSource): Promise<Buffer> {
    const opened = await source.openBlob('library/nginx', blobDigest, signal());
    assert.ok(opened, 'a peer answered');
    assert.equal(opened.size, blob.length);
    return collect(opened.read());
  }

  it('streams a blob from a good peer, asking as a peer', async () => {
    const { source, peers, metrics } = await setup([goodPeer(goodStore())]);
    assert.deepEqual(await fetchBlob(source), blob);
    assert.deepEqual(peers[0]!.seen, [{ method: 'GET', url: `/v2/library/nginx/blobs/${blobDigest.text}`, range: undefined, peerHeader: '1' }]);
    assert.equal(await metricValue(metrics.resolveDuration, { outcome: 'hit' }, 'shoal_resolve_duration_seconds_count'), 1);
  });

  it('resumes at the right offset with Range from the next peer when one dies mid-body', async () => {
    const { source, peers, metrics } = await setup([badPeer(blobDigest, blob, { kind: 'dying', after: 100_000 }), goodPeer(goodStore())]);
    assert.deepEqual(await fetchBlob(source), blob);
    assert.deepEqual(peers[1]!.seen.map((r) => r.range), ['bytes=100000-']);
    assert.equal(await metricValue(metrics.peerFailures, { reason: 'truncated' }), 1);
    assert.equal(source.isQuarantined('peer-0'), false, 'a dying peer is not a lying one');
  });

  it('cuts a peer that stalls after the idle timeout and resumes from the next', async () => {
    const { source, peers, metrics } = await setup([badPeer(blobDigest, blob, { kind: 'stalling', after: 50_000 }), goodPeer(goodStore())]);
    const started = Date.now();
    assert.deepEqual(await fetchBlob(source), blob);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= IDLE_MS - 5 && elapsed < IDLE_MS + 1000, `took ${elapsed} ms`);
    assert.deepEqual(peers[1]!.seen.map((r) => r.range), ['bytes=50000-']);
    assert.equal(await metricValue(metrics.peerFailures, { reason: 'idle' }), 1);
  });

  it('serves a slice after a failover, fetching the whole blob to check it', async () => {
    const { source, peers } = await setup([badPeer(blobDigest, blob, { kind: 'dying', after: 500 }), goodPeer(goodStore())]);
    const opened = await source.openBlob('x', blobDigest, signal());
    assert.ok(opened);
    assert.deepEqual(await collect(opened.read({ start: 1000, end: 1999 })), blob.subarray(1000, 2000));
    assert.deepEqual(peers[1]!.seen.map((r) => r.range), ['bytes=500-']);
  });

  it('quarantines a peer that sends wrong bytes, and the retry comes from a good one', async () => {
    const { source, peers, metrics } = await setup([badPeer(blobDigest, blob, { kind: 'corrupt' }), goodPeer(goodStore())]);
    const first = await source.openBlob('x', blobDigest, signal());
    assert.ok(first);
    await assert.rejects(collect(first.read()), ContentMismatchError);
    assert.equal(source.isQuarantined('peer-0'), true);
    assert.equal(source.isQuarantined('peer-1'), false);
    assert.equal(await metricValue(metrics.corrupt, { source: 'peer' }), 1);

    assert.deepEqual(await fetchBlob(source), blob);
    assert.equal(peers[0]!.seen.length, 1, 'the quarantined peer is not asked again');
    assert.equal(peers[1]!.seen.length, 1);
  });

  it('passes over 404 and unreachable peers', async () => {
    const { source, peers, metrics } = await setup([notFoundPeer(), undefined, goodPeer(goodStore())]);
    assert.deepEqual(await fetchBlob(source), blob);
    assert.equal(peers[0]!.seen.length, 1);
    assert.equal(await metricValue(metrics.peerFailures, { reason: 'status' }), 1);
    assert.equal(await metricValue(metrics.peerFailures, { reason: 'unreachable' }), 1);
  });

  it('asks no more than resolveRetries providers', async () => {
    const { source, peers } = await setup([notFoundPeer(), notFoundPeer(), goodPeer(goodStore())], { resolveRetries: 2 });
    assert.equal(await source.openBlob('x', blobDigest, signal()), undefined);
    assert.equal(peers[2]!.seen.length, 0);
  });

  it('fails the read when only peers that lie are left, quarantining every one that sent bytes', async () => {
    const { source } = await setup([badPeer(blobDigest, blob, { kind: 'dying', after: 1000 }), badPeer(blobDigest, blob, { kind: 'corrupt' })]);
    const opened = await source.openBlob('x', blobDigest, signal());
    assert.ok(opened);
    await assert.rejects(collect(opened.read()), ContentMismatchError);
    assert.equal(source.isQuarantined('peer-0'), true);
    assert.equal(source.isQuarantined('peer-1'), true);
  });

  it('fails the read when every peer fails before the end', async () => {
    const { source } = await setup([badPeer(blobDigest, blob, { kind: 'dying', after: 1000 }), badPeer(blobDigest, blob, { kind: 'stalling', after: 1000 })]);
    const opened = await source.openBlob('x', blobDigest, signal());
    assert.ok(opened);
    await assert.rejects(collect(opened.read()), PeersExhaustedError);
    assert.equal(source.isQuarantined('peer-0'), false);
  });

  it('answers undefined at once when nobody provides the content', async () => {
    const { source, metrics } = await setup([]);
    const started = Date.now();
    assert.equal(await source.openBlob('x', blobDigest, signal()), undefined);
    assert.ok(Date.now() - started < 20 + 200);
    assert.equal(await metricValue(metrics.resolveDuration, { outcome: 'miss' }, 'shoal_resolve_duration_seconds_count'), 1);
  });

  it('resolves a tag through a peer, asking its mirror with ?ns=', async () => {
    const { source, peers } = await setup([notFoundPeer(), goodPeer(goodStore())]);
    const descriptor = await source.resolveTag('docker.io', 'library/nginx', '1.27', signal());
    assert.deepEqual(descriptor, { digest: manifestDigest, mediaType: MEDIA_TYPES.ociManifest, size: manifest.length });
    assert.deepEqual(peers[1]!.seen, [{ method: 'HEAD', url: '/v2/library/nginx/manifests/1.27?ns=docker.io', range: undefined, peerHeader: '1' }]);
    assert.equal(await source.resolveTag('docker.io', 'library/nginx', '9.99', signal()), undefined);
  });

  it('fetches a manifest whole and checked, passing over a peer with wrong bytes', async () => {
    const { source } = await setup([badPeer(manifestDigest, manifest, { kind: 'corrupt' }), goodPeer(goodStore())]);
    const got = await source.fetchManifest('library/nginx', manifestDigest, signal());
    assert.deepEqual(got, { bytes: manifest, mediaType: MEDIA_TYPES.ociManifest });
    assert.equal(source.isQuarantined('peer-0'), true);
  });

  it('gives a blob size from a HEAD', async () => {
    const { source, peers } = await setup([goodPeer(goodStore())]);
    assert.equal(await source.blobSize('x', blobDigest, signal()), blob.length);
    assert.equal(peers[0]!.seen[0]!.method, 'HEAD');
  });
});
