import assert from 'node:assert/strict';
import { digestOf, type Digest } from '../../shared/digest.ts';
import type { ManifestDescriptor, RegistryCredentials } from '../../shared/distribution/types.ts';
import { UpstreamError } from '../../shared/distribution/types.ts';
import { parseImageRef, type ImageRef } from '../../shared/image-ref.ts';
import { silentLogger } from '../../shared/log.ts';
import { MEDIA_TYPES } from '../../shared/media-types.ts';
import { Resolver, type PeerTags, type UpstreamTags } from './resolver.ts';
import { TagCache } from './tag-cache.ts';
import { ResolveError, type ResolveMode } from './types.ts';

const desc = (text: string): ManifestDescriptor => ({ digest: digestOf(Buffer.from(text)), mediaType: MEDIA_TYPES.ociIndex, size: 100 });
const PEER = desc('peer');
const UP = desc('upstream');

class FakePeers implements PeerTags {
  calls: string[] = [];
  answer: ManifestDescriptor | undefined = PEER;
  resolveTag(registry: string, name: string, tag: string): Promise<ManifestDescriptor | undefined> {
    this.calls.push(`${registry}/${name}:${tag}`);
    return Promise.resolve(this.answer);
  }
}

class FakeUpstream implements UpstreamTags {
  calls: { ref: string; credentials: readonly RegistryCredentials[] }[] = [];
  answer: ManifestDescriptor | UpstreamError = UP;
  delayMs = 0;
  async resolve(ref: ImageRef, credentials: readonly RegistryCredentials[], signal: AbortSignal): Promise<ManifestDescriptor> {
    this.calls.push({ ref: ref.original, credentials });
    if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    signal.throwIfAborted();
    if (this.answer instanceof UpstreamError) throw this.answer;
    return this.answer;
  }
}

describe('Resolver', () => {
  let peers: FakePeers;
  let upstream: FakeUpstream;
  let resolver: Resolver;
  const ctx = (mode: ResolveMode = 'auto', credentials: RegistryCredentials[] = []) => ({ mode, credentials, signal: AbortSignal.timeout(2000) });
  const resolve = (ref: string, mode?: ResolveMode) => resolver.resolve(parseImageRef(ref), ctx(mode));
  const same = (a: Digest, b: ManifestDescriptor) => assert.equal(a.text, b.digest.text);

  beforeEach(() => {
    peers = new FakePeers();
    upstream = new FakeUpstream();
    resolver = new Resolver({ peers, upstream, logger: silentLogger });
  });

  it('auto, fixed tag: peers first, then the cache; upstream untouched', async () => {
    const first = await resolve('nginx:1.27');
    same(first.digest, PEER);
    assert.equal(first.by, 'peer');
    assert.deepEqual(peers.calls, ['docker.io/library/nginx:1.27']);
    const second = await resolve('docker.io/library/nginx:1.27');
    assert.equal(second.by, 'cache');
    assert.equal(peers.calls.length, 1);
    assert.equal(upstream.calls.length, 0);
  });

  it('auto, fixed tag no peer has: upstream', async () => {
    peers.answer = undefined;
    const r = await resolve('ghcr.io/org/app:v2');
    same(r.digest, UP);
    assert.equal(r.by, 'upstream');
  });

  it('auto, mutable tag (latest, or no tag): upstream first; peers only when upstream fails', async () => {
    for (const ref of ['nginx:latest', 'redis']) {
      const r = await resolve(ref);
      assert.equal(r.by, 'upstream', ref);
    }
    assert.equal(peers.calls.length, 0);
    upstream.answer = new UpstreamError('unavailable', 'docker.io', 'down', 503);
    const fallback = await resolve('busybox:latest');
    assert.equal(fallback.by, 'peer');
  });

  it('a custom --mutable-tags pattern', async () => {
    resolver = new Resolver({ peers, upstream, logger: silentLogger, mutableTags: /^(latest|main|dev-.*)$/ });
    assert.equal((await resolve('app:dev-42')).by, 'upstream');
    assert.equal((await resolve('app:1.0')).by, 'peer');
  });

  it('upstream mode: never the cache, never a peer, even when upstream fails', async () => {
    await resolve('nginx:1.27');
    const r = await resolve('nginx:1.27', 'upstream');
    assert.equal(r.by, 'upstream');
    upstream.answer = new UpstreamError('unavailable', 'docker.io', 'down', 503);
    await assert.rejects(resolve('nginx:1.28', 'upstream'), (err: unknown) => err instanceof ResolveError && /upstream unavailable \(503\)/.test(err.message));
    assert.deepEqual(peers.calls, ['docker.io/library/nginx:1.27']);
  });

  it('peers mode: never upstream', async () => {
    peers.answer = undefined;
    await assert.rejects(resolve('nginx:1.27', 'peers'), (err: unknown) => err instanceof ResolveError && /no peer has it/.test(err.message));
    assert.equal(upstream.calls.length, 0);
  });

  it('says why when nothing resolves', async () => {
    peers.answer = undefined;
    upstream.answer = new UpstreamError('not-found', 'docker.io', 'no such tag', 404);
    await assert.rejects(resolve('nginx:nope'), /cannot resolve docker.io\/library\/nginx:nope: no peer has it; upstream not-found \(404\)/);
  });

  it('without a peer network, auto goes upstream', async () => {
    resolver = new Resolver({ peers: undefined, upstream, logger: silentLogger });
    assert.equal((await resolve('nginx:1.27')).by, 'upstream');
  });

  it('identical concurrent lookups share one upstream call; other credentials do not', async () => {
    upstream.delayMs = 30;
    const creds: RegistryCredentials[] = [{ kind: 'basic', username: 'u', password: 'p' }];
    const all = await Promise.all([
      resolver.resolve(parseImageRef('app:latest'), ctx()),
      resolver.resolve(parseImageRef('app:latest'), ctx()),
      resolver.resolve(parseImageRef('app:latest'), ctx()),
      resolver.resolve(parseImageRef('app:latest'), ctx('auto', creds)),
    ]);
    assert.ok(all.every((r) => r.by === 'upstream'));
    assert.equal(upstream.calls.length, 2);
    assert.deepEqual(upstream.calls[1]!.credentials, creds);
  });

  it('the cache expires and is bounded', async () => {
    let now = 0;
    const cache = new TagCache({ ttlMs: 1000, maxEntries: 2, now: () => now });
    resolver = new Resolver({ peers, upstream, logger: silentLogger, cache });
    await resolve('a:1');
    await resolve('b:1');
    await resolve('c:1');
    assert.equal(cache.size, 2);
    assert.equal((await resolve('a:1')).by, 'peer', 'a was evicted');
    now = 2000;
    assert.equal((await resolve('c:1')).by, 'peer', 'c expired');
  });

  it('a lookup cut by the review budget says it timed out', async () => {
    peers.answer = undefined;
    upstream.delayMs = 200;
    await assert.rejects(resolver.resolve(parseImageRef('nginx:1.27'), { mode: 'auto', credentials: [], signal: AbortSignal.timeout(20) }), /timed out resolving/);
  });
});
