import assert from 'node:assert/strict';
import { digestOf, type Digest } from '../../shared/digest.ts';
import { MEDIA_TYPES } from '../../shared/media-types.ts';
import type { Slice } from '../../shared/verify.ts';
import type { ImageRecord } from '../store/containerd/client.ts';
import { MemoryStore } from '../store/memory-store.ts';
import type { ContentStore, Descriptor, TagKey } from '../store/store.ts';
import { collectKeys, parseImageName, type KeySources } from './keys.ts';
import { ManifestReader } from './manifests.ts';

const REGISTRY = '127.0.0.1:5000';
const CONFIG = 'application/vnd.oci.image.config.v1+json';
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

interface Blob extends Descriptor {
  readonly bytes: Buffer;
}

function blob(mediaType: string, content: string | object): Blob {
  const bytes = Buffer.from(typeof content === 'string' ? content : JSON.stringify(content));
  return { mediaType, digest: digestOf(bytes), size: bytes.length, bytes };
}

const ref = (b: Descriptor) => ({ mediaType: b.mediaType, digest: b.digest.text, size: b.size });

function manifest(config: Blob, layers: Blob[]): Blob {
  return blob(MEDIA_TYPES.ociManifest, { schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: ref(config), layers: layers.map(ref) });
}

function index(manifests: { manifest: Blob; architecture: string }[]): Blob {
  return blob(MEDIA_TYPES.ociIndex, {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociIndex,
    manifests: manifests.map((m) => ({ ...ref(m.manifest), platform: { os: 'linux', architecture: m.architecture } })),
  });
}

function record(name: string, target: Descriptor): ImageRecord {
  return { name, labels: {}, target: { mediaType: target.mediaType, digest: target.digest.text, size: target.size } };
}

const key = (b: Descriptor) => b.digest.text;

/** A two-platform image of which only amd64 was pulled, and a single-manifest image from another registry. */
function fixture() {
  const amdConfig = blob(CONFIG, { architecture: 'amd64' });
  const amdLayers = [blob(LAYER, 'amd64 layer 0'), blob(LAYER, 'amd64 layer 1')];
  const amd = manifest(amdConfig, amdLayers);
  const armConfig = blob(CONFIG, { architecture: 'arm64' });
  const armLayer = blob(LAYER, 'arm64 layer 0');
  const arm = manifest(armConfig, [armLayer]);
  const multi = index([
    { manifest: amd, architecture: 'amd64' },
    { manifest: arm, architecture: 'arm64' },
  ]);
  const hubConfig = blob(CONFIG, { architecture: 'amd64', hub: true });
  const hubLayer = blob(LAYER, 'nginx layer');
  const hub = manifest(hubConfig, [hubLayer]);

  const store = new MemoryStore();
  for (const b of [multi, amd, amdConfig, ...amdLayers, hub, hubConfig, hubLayer]) store.put(b.digest, b.bytes);
  return { store, multi, amd, amdConfig, amdLayers, arm, armConfig, armLayer, hub, hubConfig, hubLayer };
}

function sourcesFor(store: MemoryStore, mirrored: string[], children?: KeySources['children']): KeySources {
  const reader = new ManifestReader({ store });
  return {
    mirrored: new Set(mirrored),
    isPresent: async (digest) => (await store.size(digest)) !== undefined,
    children: children ?? ((d) => reader.children(d)),
  };
}

function sorted(keys: Iterable<string>): string[] {
  return [...keys].sort();
}

describe('advertiser keys', function () {
  describe('parseImageName', function () {
    const digest = `sha256:${'a'.repeat(64)}`;
    const cases: [string, ReturnType<typeof parseImageName>][] = [
      ['docker.io/library/nginx:1.27', { registry: 'docker.io', name: 'library/nginx', tag: '1.27' }],
      ['127.0.0.1:5000/test/x:v1', { registry: '127.0.0.1:5000', name: 'test/x', tag: 'v1' }],
      ['[::1]:5000/a/b:c', { registry: '[::1]:5000', name: 'a/b', tag: 'c' }],
      [`127.0.0.1:5000/test/x@${digest}`, { registry: '127.0.0.1:5000', name: 'test/x', tag: undefined }],
      [`127.0.0.1:5000/test/x:v1@${digest}`, { registry: '127.0.0.1:5000', name: 'test/x', tag: undefined }],
      ['localhost/x', { registry: 'localhost', name: 'x', tag: undefined }],
      [digest, undefined],
      ['nginx:1.27', undefined],
      ['127.0.0.1:5000/Test/X:v1', undefined],
      ['127.0.0.1:5000/test/x:.bad', undefined],
      ['127.0.0.1:5000/test/x@sha256:short', undefined],
      ['/test/x:v1', undefined],
    ];
    for (const [text, want] of cases) {
      it(`${text.length > 60 ? `${text.slice(0, 57)}...` : text} → ${want === undefined ? 'no registry' : `${want.registry} ${want.name} ${want.tag ?? '(no tag)'}`}`, function () {
        assert.deepEqual(parseImageName(text), want);
      });
    }
  });

  it('an index with two platforms, one pulled: the tag, the index, and that platform\'s manifest, config and layers', async function () {
    const f = fixture();
    const result = await collectKeys([record(`${REGISTRY}/test/multi:v1`, f.multi)], sourcesFor(f.store, [REGISTRY]));
    assert.deepEqual(sorted(result.keys), sorted([`${REGISTRY}/test/multi:v1`, key(f.multi), key(f.amd), key(f.amdConfig), ...f.amdLayers.map(key)]));
    assert.equal(result.tags, 1);
    assert.equal(result.images, 1);
    assert.deepEqual(result.unservable, []);
  });

  it('the blobs of a manifest that is present are advertised as far as they are present', async function () {
    const f = fixture();
    // The arm64 manifest and config arrived, its layer did not.
    f.store.put(f.arm.digest, f.arm.bytes);
    f.store.put(f.armConfig.digest, f.armConfig.bytes);
    const result = await collectKeys([record(`${REGISTRY}/test/multi:v1`, f.multi)], sourcesFor(f.store, [REGISTRY]));
    assert.ok(result.keys.has(key(f.arm)) && result.keys.has(key(f.armConfig)));
    assert.ok(!result.keys.has(key(f.armLayer)));
  });

  it('repo-digest and sha256: records give content keys at most, never a tag key', async function () {
    const f = fixture();
    const records = [record(`${REGISTRY}/test/multi@${f.multi.digest.text}`, f.multi), record(f.amdConfig.digest.text, f.multi)];
    const mirrored = await collectKeys(records, sourcesFor(f.store, [REGISTRY]));
    // The sha256: record names no registry: with a registry list it belongs to none of them.
    assert.deepEqual(sorted(mirrored.keys), sorted([key(f.multi), key(f.amd), key(f.amdConfig), ...f.amdLayers.map(key)]));
    assert.equal(mirrored.tags, 0);
    const onlyConfigRecord = await collectKeys([records[1]!], sourcesFor(f.store, [REGISTRY]));
    assert.deepEqual(sorted(onlyConfigRecord.keys), []);
    const all = await collectKeys([records[1]!], sourcesFor(f.store, []));
    assert.deepEqual(sorted(all.keys), sorted([key(f.multi), key(f.amd), key(f.amdConfig), ...f.amdLayers.map(key)]));
  });

  it('images of registries not mirrored are skipped; with no list, every registry is mirrored', async function () {
    const f = fixture();
    const records = [record(`${REGISTRY}/test/multi:v1`, f.multi), record('docker.io/library/nginx:1.27', f.hub)];
    const some = await collectKeys(records, sourcesFor(f.store, [REGISTRY]));
    assert.ok(!some.keys.has('docker.io/library/nginx:1.27'));
    for (const b of [f.hub, f.hubConfig, f.hubLayer]) assert.ok(!some.keys.has(key(b)), `${key(b)} not advertised`);
    const all = await collectKeys(records, sourcesFor(f.store, []));
    assert.deepEqual(sorted(all.keys), sorted([...some.keys, 'docker.io/library/nginx:1.27', key(f.hub), key(f.hubConfig), key(f.hubLayer)]));
    assert.equal(all.tags, 2);
  });

  it('a tag whose target is not held gives nothing', async function () {
    const f = fixture();
    const result = await collectKeys([record(`${REGISTRY}/test/arm:v1`, f.arm)], sourcesFor(f.store, [REGISTRY]));
    assert.deepEqual(sorted(result.keys), []);
  });

  it('a target that is no manifest type (schema 1) is skipped', async function () {
    const f = fixture();
    const schema1 = { ...f.hub, mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' };
    const result = await collectKeys([record(`${REGISTRY}/test/old:v1`, schema1)], sourcesFor(f.store, []));
    assert.deepEqual(sorted(result.keys), []);
    assert.equal(result.images, 0);
  });

  it('a manifest that does not match its digest: not it, not what it lists; the rest still, and no error', async function () {
    const f = fixture();
    // Same size, one byte changed: only a checked read can tell.
    const corrupt = Buffer.from(f.amd.bytes);
    const at = corrupt.length - 2;
    corrupt[at] = corrupt[at]! ^ 1;
    f.store.put(f.amd.digest, corrupt);
    const records = [record(`${REGISTRY}/test/multi:v1`, f.multi), record(`${REGISTRY}/test/hub:v1`, f.hub)];
    const result = await collectKeys(records, sourcesFor(f.store, [REGISTRY]));
    assert.deepEqual(sorted(result.keys), sorted([`${REGISTRY}/test/multi:v1`, key(f.multi), `${REGISTRY}/test/hub:v1`, key(f.hub), key(f.hubConfig), key(f.hubLayer)]));
    assert.deepEqual(result.unservable.map((d) => d.text), [key(f.amd)]);
  });

  it('a target that is not a manifest at all gives no key, not even its tag', async function () {
    const f = fixture();
    const notManifest = blob(MEDIA_TYPES.ociManifest, { hello: 'world' });
    f.store.put(notManifest.digest, notManifest.bytes);
    const result = await collectKeys([record(`${REGISTRY}/test/odd:v1`, notManifest)], sourcesFor(f.store, [REGISTRY]));
    assert.deepEqual(sorted(result.keys), []);
    assert.deepEqual(result.unservable.map((d) => d.text), [key(notManifest)]);
  });

  it('content gone between the presence check and the read counts as absent', async function () {
    const f = fixture();
    const store = new FlakyStore(f.store, new Map([[key(f.amd), () => Object.assign(new Error('gone'), { code: 'ENOENT' })]]));
    const result = await collectKeys([record(`${REGISTRY}/test/multi:v1`, f.multi)], { ...sourcesFor(f.store, [REGISTRY]), children: (d) => new ManifestReader({ store }).children(d) });
    assert.deepEqual(sorted(result.keys), sorted([`${REGISTRY}/test/multi:v1`, key(f.multi)]));
  });

  it('containerd failing to answer is an error, never taken for absence', async function () {
    const f = fixture();
    const store = new FlakyStore(f.store, new Map([[key(f.amd), () => Object.assign(new Error('connect ECONNREFUSED'), { code: 14 })]]));
    const reader = new ManifestReader({ store });
    await assert.rejects(collectKeys([record(`${REGISTRY}/test/multi:v1`, f.multi)], { ...sourcesFor(f.store, [REGISTRY]), children: (d) => reader.children(d) }), /ECONNREFUSED/);
  });

  describe('ManifestReader', function () {
    it('reads each manifest once and remembers its children', async function () {
      const f = fixture();
      const reader = new ManifestReader({ store: f.store });
      const sources: KeySources = { ...sourcesFor(f.store, []), children: (d) => reader.children(d) };
      const records = [record(`${REGISTRY}/test/multi:v1`, f.multi)];
      const first = await collectKeys(records, sources);
      assert.equal(reader.reads, 2);
      const second = await collectKeys(records, sources);
      assert.equal(reader.reads, 2);
      assert.deepEqual(sorted(second.keys), sorted(first.keys));
    });

    it('keeps at most maxEntries, dropping the least recently used', async function () {
      const f = fixture();
      const reader = new ManifestReader({ store: f.store, maxEntries: 2 });
      await reader.children(f.multi);
      await reader.children(f.amd);
      await reader.children(f.multi);
      await reader.children(f.hub); // evicts amd, the least recently used
      assert.equal(reader.cached, 2);
      const reads = reader.reads;
      await reader.children(f.multi);
      assert.equal(reader.reads, reads);
      await reader.children(f.amd);
      assert.equal(reader.reads, reads + 1);
    });

    it('does not read a manifest larger than a registry would serve', async function () {
      const f = fixture();
      const reader = new ManifestReader({ store: f.store });
      assert.equal(await reader.children({ ...f.amd, size: 5 * 1024 * 1024 }), undefined);
      assert.equal(reader.reads, 0);
    });
  });
});

/** A store whose reads of some digests fail with the given error; the rest come from another store. */
class FlakyStore implements ContentStore {
  readonly #from: ContentStore;
  readonly #failures: ReadonlyMap<string, () => Error>;

  constructor(from: ContentStore, failures: ReadonlyMap<string, () => Error>) {
    this.#from = from;
    this.#failures = failures;
  }

  resolveTag(tag: TagKey): Promise<Descriptor | undefined> {
    return this.#from.resolveTag(tag);
  }

  size(digest: Digest): Promise<number | undefined> {
    return this.#from.size(digest);
  }

  read(digest: Digest, size: number, slice?: Slice): AsyncIterable<Uint8Array> {
    const fail = this.#failures.get(digest.text);
    if (fail === undefined) return this.#from.read(digest, size, slice);
    return { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(fail()) }) };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
