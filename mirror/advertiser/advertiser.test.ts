/**
 * The advertiser's scheduling against a scripted containerd: debounced
 * events, failures that must not withdraw anything, a broken event stream.
 * What it advertises from a real containerd is tested in hack/e2e/advertiser.test.ts.
 */
import assert from 'node:assert/strict';
import { EventEmitter, on } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { digestOf } from '../../shared/digest.ts';
import { silentLogger } from '../../shared/log.ts';
import { MEDIA_TYPES } from '../../shared/media-types.ts';
import { MemoryNetwork, type MemoryRouter } from '../../shared/p2p/memory-router.ts';
import type { ContainerdEvent, ContentInfo, ImageRecord } from '../store/containerd/client.ts';
import { MemoryStore } from '../store/memory-store.ts';
import { Advertiser, type AdvertiserContainerd } from './advertiser.ts';

/** containerd as the advertiser sees it, scripted: images, content, and one event stream at a time. */
class ScriptedContainerd implements AdvertiserContainerd {
  readonly namespace = 'k8s.io';
  images: ImageRecord[] = [];
  content = new Set<string>();
  /** When set, every call fails with it. */
  down: Error | undefined;
  listCalls = 0;
  subscribeCalls = 0;
  #stream: EventEmitter | undefined;

  listImages(): Promise<ImageRecord[]> {
    this.listCalls++;
    return this.down ? Promise.reject(this.down) : Promise.resolve([...this.images]);
  }

  async *listContent(): AsyncGenerator<ContentInfo> {
    await Promise.resolve();
    if (this.down) throw this.down;
    for (const digest of this.content) yield { digest, size: 0, labels: {} };
  }

  async *subscribe(_filters: string[], signal?: AbortSignal): AsyncGenerator<ContainerdEvent> {
    this.subscribeCalls++;
    await Promise.resolve();
    if (this.down) throw this.down;
    const stream = new EventEmitter();
    this.#stream = stream;
    try {
      for await (const [event] of on(stream, 'event', { signal })) yield event as ContainerdEvent;
    } catch (err) {
      if (signal?.aborted) return;
      throw err;
    }
  }

  /** Sends an image event on the current stream. */
  emit(name: string): void {
    const event: ContainerdEvent = {
      timestamp: new Date(),
      namespace: this.namespace,
      topic: '/images/create',
      typeUrl: 'containerd.services.images.v1.ImageCreate',
      payload: Buffer.alloc(0),
      decoded: { type: 'image-create', name, labels: {} },
    };
    this.#stream?.emit('event', event);
  }

  /** Breaks the current stream, as a containerd restart does. */
  breakStream(): void {
    this.#stream?.emit('error', new Error('14 UNAVAILABLE: Connection dropped'));
  }
}

async function until(check: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await sleep(5);
  }
}

describe('Advertiser scheduling', function () {
  const registry = { host: '127.0.0.1:5000', upstream: new URL('http://127.0.0.1:5000') };
  let containerd: ScriptedContainerd;
  let store: MemoryStore;
  let router: MemoryRouter;
  let advertiser: Advertiser;

  /** Puts an image (a manifest with one layer) into the store and containerd; returns its keys. */
  function addImage(tag: string): string[] {
    const layer = Buffer.from(`layer of ${tag}`);
    const layerDigest = digestOf(layer);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociManifest,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: layerDigest.text, size: layer.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest.text, size: layer.length }],
      }),
    );
    const manifestDigest = digestOf(manifest);
    store.put(layerDigest, layer);
    store.put(manifestDigest, manifest);
    containerd.content.add(layerDigest.text).add(manifestDigest.text);
    const name = `${registry.host}/test/app:${tag}`;
    containerd.images.push({ name, labels: {}, target: { mediaType: MEDIA_TYPES.ociManifest, digest: manifestDigest.text, size: manifest.length } });
    return [name, manifestDigest.text, layerDigest.text];
  }

  beforeEach(function () {
    containerd = new ScriptedContainerd();
    store = new MemoryStore();
    router = new MemoryNetwork().join({ peerId: 'self', host: '127.0.0.1' });
    advertiser = new Advertiser({
      containerd,
      store,
      router,
      mirroredRegistries: [registry],
      logger: silentLogger,
      resyncIntervalMs: 60_000,
      debounceMs: 20,
      minBackoffMs: 10,
      maxBackoffMs: 40,
    });
  });

  afterEach(async function () {
    await advertiser.stop();
  });

  it('a burst of events costs one sync', async function () {
    const v1 = addImage('v1');
    await advertiser.start();
    assert.deepEqual([...router.advertised()].sort(), v1.sort());
    const v2 = addImage('v2');
    await until(() => containerd.subscribeCalls === 1, 'subscribed');
    for (let i = 0; i < 20; i++) containerd.emit(`${registry.host}/test/app:v2`);
    await until(() => advertiser.status().syncs === 2, 'the sync after the events');
    assert.deepEqual([...router.advertised()].sort(), [...v1, ...v2].sort());
    assert.equal(advertiser.status().events, 20);
    // Several debounce periods later, still one sync for the burst.
    await sleep(100);
    assert.equal(containerd.listCalls, 2);
  });

  it('a failed sync withdraws nothing, and is retried with backoff until containerd answers', async function () {
    const v1 = addImage('v1');
    const v2 = addImage('v2');
    await advertiser.start();
    containerd.down = new Error('14 UNAVAILABLE: No connection established');
    containerd.images = containerd.images.filter((i) => !i.name.endsWith(':v2'));
    await advertiser.sync().then(
      () => assert.fail('sync should fail'),
      (err: Error) => assert.match(err.message, /UNAVAILABLE/),
    );
    assert.match(advertiser.status().lastError ?? '', /UNAVAILABLE/);
    assert.deepEqual([...router.advertised()].sort(), [...v1, ...v2].sort(), 'nothing withdrawn while containerd cannot be asked');
    const calls = containerd.listCalls;
    await until(() => containerd.listCalls >= calls + 2, 'retries');
    containerd.down = undefined;
    await until(() => advertiser.status().lastError === undefined, 'a sync once containerd answers');
    assert.deepEqual([...router.advertised()].sort(), [...v1].sort());
  });

  it('a broken event stream is subscribed again, and a resync covers the gap', async function () {
    addImage('v1');
    await advertiser.start();
    await until(() => containerd.subscribeCalls === 1, 'subscribed');
    const syncs = advertiser.status().syncs;
    // Added while the stream is down: no event will tell.
    const v2 = addImage('v2');
    containerd.breakStream();
    await until(() => containerd.subscribeCalls === 2, 'subscribed again');
    await until(() => v2.every((k) => router.advertised().has(k)), 'the image added in the gap');
    assert.ok(advertiser.status().syncs > syncs);
    // The new stream works.
    const v3 = addImage('v3');
    containerd.emit(`${registry.host}/test/app:v3`);
    await until(() => v3.every((k) => router.advertised().has(k)), 'the image after the new subscription');
  });

  it('re-subscribes with growing backoff while containerd is down, and stops cleanly meanwhile', async function () {
    await advertiser.start();
    await until(() => containerd.subscribeCalls === 1, 'subscribed');
    containerd.down = new Error('14 UNAVAILABLE');
    containerd.breakStream();
    const began = Date.now();
    await until(() => containerd.subscribeCalls >= 5, 'several attempts');
    // 10 + 20 + 40 + 40 ms of backoff at least, not a busy loop.
    assert.ok(Date.now() - began >= 100, `attempts came after ${Date.now() - began} ms`);
    await advertiser.stop();
    const attempts = containerd.subscribeCalls;
    await sleep(100);
    assert.equal(containerd.subscribeCalls, attempts);
  });

  it('sync() during a sync runs one more sync after it, which sees the later state', async function () {
    addImage('v1');
    await advertiser.start();
    const first = advertiser.sync();
    const v2 = addImage('v2');
    const second = advertiser.sync();
    await Promise.all([first, second]);
    assert.ok(v2.every((k) => router.advertised().has(k)));
  });
});
