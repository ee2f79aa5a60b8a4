import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { Registry } from 'prom-client';
import { digestOf } from '../../shared/digest.ts';
import { close, listen } from '../../shared/http-listen.ts';
import { silentLogger } from '../../shared/log.ts';
import { MEDIA_TYPES } from '../../shared/media-types.ts';
import { contentKey, tagKey } from '../../shared/p2p/keys.ts';
import { MemoryNetwork } from '../../shared/p2p/memory-router.ts';
import type { Router } from '../../shared/p2p/router.ts';
import { parseMirroredRegistries } from '../../shared/registries.ts';
import { createMirrorMetrics, type MirrorMetrics } from '../metrics.ts';
import { PEER_REQUEST_HEADER } from '../../shared/peers/peer-client.ts';
import { PeerSource } from '../../shared/peers/peer-source.ts';
import { badPeer, goodPeer, metricValue, notFoundPeer, ScriptedRouter, TestPeers, type PeerHandler, type TestPeer } from '../../shared/peers/testing.ts';
import { MemoryStore } from '../store/memory-store.ts';
import { createRegistryHandler } from './handler.ts';

const blob = randomBytes(512 * 1024);
const blobDigest = digestOf(blob);
const small = Buffer.from('a small blob, sent in one piece');
const smallDigest = digestOf(small);
const localBlob = Buffer.from('this node has this one');
const localDigest = digestOf(localBlob);
const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: {}, layers: [] }));
const manifestDigest = digestOf(manifest);
const missing = digestOf(Buffer.from('nobody has this'));
const IDLE_MS = 300;
const KEYS = [contentKey(blobDigest), contentKey(smallDigest), contentKey(manifestDigest), tagKey('docker.io', 'library/nginx', '1.27')];

function err(code: string, message: string, detail?: unknown): unknown {
  return { errors: [detail === undefined ? { code, message } : { code, message, detail }] };
}

function goodStore(): MemoryStore {
  const store = new MemoryStore();
  store.chunkSize = 16 * 1024;
  for (const bytes of [blob, small, manifest]) store.put(digestOf(bytes), bytes);
  store.tag({ registry: 'docker.io', name: 'library/nginx', tag: '1.27' }, { mediaType: MEDIA_TYPES.ociManifest, digest: manifestDigest, size: manifest.length });
  return store;
}

describe('registry handler with peers', function () {
  this.timeout(20_000);
  let cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const fn of cleanup.reverse()) await fn();
    cleanup = [];
  });

  /** This node's mirror (holding only localBlob) in front of peers in the given order. */
  async function setup(
    handlers: (PeerHandler | undefined)[],
    options: { router?: (peers: TestPeer[]) => Router; resolveTimeoutMs?: number; lookupTimeoutMs?: number } = {},
  ): Promise<{ base: string; peers: TestPeer[]; metrics: MirrorMetrics; source: PeerSource }> {
    const { peers: servers, list } = await TestPeers.start(handlers);
    cleanup.push(() => servers.close());
    let router: Router;
    if (options.router) {
      router = options.router(list);
    } else {
      const network = new MemoryNetwork();
      for (const peer of list) network.join(peer.provider).advertise(KEYS);
      const memory = network.join({ peerId: 'self', host: '127.0.0.1' });
      const order = list.map((p) => p.provider.peerId);
      memory.order = (found) => [...found].sort((a, b) => order.indexOf(a.peerId) - order.indexOf(b.peerId));
      router = memory;
    }
    const metrics = createMirrorMetrics(new Registry());
    const source = new PeerSource({
      router,
      peerRegistryPort: servers.port,
      peerIdleTimeoutMs: IDLE_MS,
      resolveTimeoutMs: options.resolveTimeoutMs,
      lookupTimeoutMs: options.lookupTimeoutMs,
      logger: silentLogger,
      metrics,
    });
    cleanup.push(() => source.close());
    const store = new MemoryStore();
    store.put(localDigest, localBlob);
    const server = createServer(createRegistryHandler({ store, mirroredRegistries: parseMirroredRegistries('docker.io'), logger: silentLogger, metrics, peers: source }));
    const port = await listen(server, { host: '127.0.0.1', port: 0 });
    cleanup.push(() => close(server, 0));
    return { base: `http://127.0.0.1:${port}`, peers: list, metrics, source };
  }

  it('serves a blob it lacks from a peer, streamed, and counts it as a peer hit', async () => {
    const { base, metrics } = await setup([goodPeer(goodStore())]);
    const res = await fetch(`${base}/v2/library/nginx/blobs/${blobDigest.text}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('docker-content-digest'), blobDigest.text);
    assert.equal(res.headers.get('content-length'), String(blob.length));
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), blob);
    assert.equal(await metricValue(metrics.requests, { source: 'peer', kind: 'blob' }), 1);
    assert.equal(await metricValue(metrics.bytes, { source: 'peer' }), blob.length);

    const local = await fetch(`${base}/v2/x/blobs/${localDigest.text}`);
    assert.deepEqual(Buffer.from(await local.arrayBuffer()), localBlob);
    assert.equal(await metricValue(metrics.requests, { source: 'local', kind: 'blob' }), 1, 'what the node has is still local');
  });

  it('answers a Range from peers after a failover, the next peer resuming where the dead one stopped', async () => {
    const { base, peers } = await setup([badPeer(blobDigest, blob, { kind: 'dying', after: 70_000 }), goodPeer(goodStore())]);
    const res = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`, { headers: { Range: 'bytes=100000-100999' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get('content-range'), `bytes 100000-100999/${blob.length}`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), blob.subarray(100_000, 101_000));
    assert.deepEqual(peers[0]!.seen.map((r) => r.range), [undefined], 'the whole blob is fetched, to check it');
    assert.deepEqual(peers[1]!.seen.map((r) => r.range), ['bytes=70000-']);
  });

  it('cuts a stalling peer after the idle timeout and completes from the next', async () => {
    const { base, peers } = await setup([badPeer(blobDigest, blob, { kind: 'stalling', after: 200_000 }), goodPeer(goodStore())]);
    const started = Date.now();
    const res = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), blob);
    assert.ok(Date.now() - started >= IDLE_MS - 5);
    assert.deepEqual(peers[1]!.seen.map((r) => r.range), ['bytes=200000-']);
  });

  it('aborts a response that only lying peers could serve, quarantines them, and a retry comes from a good peer', async () => {
    const { base, peers, source, metrics } = await setup([badPeer(blobDigest, blob, { kind: 'corrupt' }), goodPeer(goodStore())]);
    const first = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`);
    assert.equal(first.status, 200, 'headers went out with the first verified bytes');
    await assert.rejects(first.arrayBuffer(), 'the body never completes');
    assert.equal(source.isQuarantined(peers[0]!.provider.peerId), true);
    assert.equal(await metricValue(metrics.corrupt, { source: 'peer' }), 1);

    const retry = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`);
    assert.deepEqual(Buffer.from(await retry.arrayBuffer()), blob);
    assert.equal(peers[0]!.seen.length, 1);
  });

  it('never completes a response when every peer fails mid-body', async () => {
    const { base } = await setup([badPeer(blobDigest, blob, { kind: 'dying', after: 100_000 }), badPeer(blobDigest, blob, { kind: 'stalling', after: 150_000 })]);
    const res = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`);
    assert.equal(res.status, 200);
    await assert.rejects(res.arrayBuffer());
  });

  it('answers 404 when the only peer lies and nothing was sent yet', async () => {
    const { base, peers, source } = await setup([badPeer(smallDigest, small, { kind: 'corrupt' })]);
    const res = await fetch(`${base}/v2/x/blobs/${smallDigest.text}`);
    assert.equal(res.status, 404);
    assert.equal(res.headers.get('docker-content-digest'), null);
    assert.deepEqual(await res.json(), err('BLOB_UNKNOWN', 'blob unknown to this node', { digest: smallDigest.text }));
    assert.equal(source.isQuarantined(peers[0]!.provider.peerId), true);
  });

  it('resolves a tag through a peer: HEAD gives the digest headers, GET the checked bytes', async () => {
    const { base, peers, metrics } = await setup([goodPeer(goodStore())]);
    const head = await fetch(`${base}/v2/nginx/manifests/1.27?ns=docker.io`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('docker-content-digest'), manifestDigest.text);
    assert.equal(head.headers.get('content-type'), MEDIA_TYPES.ociManifest);
    assert.equal(head.headers.get('content-length'), String(manifest.length));
    assert.deepEqual(peers[0]!.seen.map((r) => `${r.method} ${r.url}`), ['HEAD /v2/library/nginx/manifests/1.27?ns=docker.io']);

    const get = await fetch(`${base}/v2/nginx/manifests/1.27?ns=docker.io`);
    assert.equal(get.status, 200);
    assert.equal(get.headers.get('docker-content-digest'), manifestDigest.text);
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), manifest);

    const byDigest = await fetch(`${base}/v2/nginx/manifests/${manifestDigest.text}?ns=docker.io`);
    assert.equal(byDigest.headers.get('content-type'), MEDIA_TYPES.ociManifest);
    assert.deepEqual(Buffer.from(await byDigest.arrayBuffer()), manifest);
    assert.equal(await metricValue(metrics.requests, { source: 'peer', kind: 'manifest' }), 3);
  });

  it('answers HEAD for a blob from a peer', async () => {
    const { base } = await setup([notFoundPeer(), goodPeer(goodStore())]);
    const res = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`, { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(blob.length));
  });

  it('never asks peers on behalf of a peer', async () => {
    let router: ScriptedRouter | undefined;
    const { base } = await setup([goodPeer(goodStore())], { router: (peers) => (router = new ScriptedRouter([{ provider: peers[0]!.provider, atMs: 0 }])) });
    for (const path of [`/v2/x/blobs/${blobDigest.text}`, `/v2/x/manifests/${manifestDigest.text}`, '/v2/nginx/manifests/1.27?ns=docker.io']) {
      const res = await fetch(base + path, { headers: { [PEER_REQUEST_HEADER]: '1' } });
      assert.equal(res.status, 404, path);
      await res.arrayBuffer();
    }
    assert.deepEqual(router!.lookups, []);
    const res = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`);
    assert.equal(res.status, 200, 'the same request without the header is served');
    await res.arrayBuffer();
    assert.deepEqual(router!.lookups, [contentKey(blobDigest)]);
  });

  it('answers 404 within the resolve timeout when no provider turns up', async () => {
    const RESOLVE_MS = 20;
    // A lookup that never yields and would run for 10 s: only the resolve timeout ends the wait.
    const { base, metrics } = await setup([], { router: () => new ScriptedRouter([]), resolveTimeoutMs: RESOLVE_MS, lookupTimeoutMs: 10_000 });
    const cases: [string, unknown][] = [
      [`/v2/x/blobs/${missing.text}`, err('BLOB_UNKNOWN', 'blob unknown to this node', { digest: missing.text })],
      [`/v2/x/manifests/${missing.text}`, err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'x', reference: missing.text })],
      ['/v2/nginx/manifests/1.27?ns=docker.io', err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'nginx', reference: '1.27' })],
    ];
    for (const [path, body] of cases) {
      const started = Date.now();
      const res = await fetch(base + path);
      const elapsed = Date.now() - started;
      assert.equal(res.status, 404, path);
      assert.equal(res.headers.get('content-type'), 'application/json');
      assert.deepEqual(await res.json(), body);
      assert.ok(elapsed < RESOLVE_MS + 200, `${path}: answered after ${elapsed} ms`);
    }
    assert.equal(await metricValue(metrics.resolveDuration, { outcome: 'miss' }, 'shoal_resolve_duration_seconds_count'), 3);
    assert.equal(await metricValue(metrics.requests, { source: 'miss' }), 3);
  });
});
