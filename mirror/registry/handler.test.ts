import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { rawRequest } from '../../hack/harness/http.ts';
import { Registry } from 'prom-client';
import { digestOf } from '../../shared/digest.ts';
import { close, listen } from '../../shared/http-listen.ts';
import { silentLogger } from '../../shared/log.ts';
import { MEDIA_TYPES } from '../../shared/media-types.ts';
import { parseMirroredRegistries } from '../../shared/registries.ts';
import { createMirrorMetrics } from '../metrics.ts';
import { MemoryStore } from '../store/memory-store.ts';
import { createRegistryHandler } from './handler.ts';

const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: {}, layers: [] }));
const manifestDigest = digestOf(manifest);
const index = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] })); // no mediaType: inferred
const indexDigest = digestOf(index);
const blob = Buffer.from('layer bytes, more than one chunk of them');
const blobDigest = digestOf(blob);
const corrupt = Buffer.from('these bytes are not what the digest says');
const corruptDigest = digestOf(Buffer.from('the original bytes'));
const corruptManifestDigest = digestOf(Buffer.from('{"schemaVersion":2}'));
const missing = digestOf(Buffer.from('nobody has this'));

function err(code: string, message: string, detail?: unknown): unknown {
  return { errors: [detail === undefined ? { code, message } : { code, message, detail }] };
}

describe('registry handler', () => {
  let server: Server;
  let base: string;
  before(async () => {
    const store = new MemoryStore();
    store.put(manifestDigest, manifest);
    store.put(indexDigest, index);
    store.put(blobDigest, blob);
    store.put(corruptDigest, corrupt);
    store.put(corruptManifestDigest, Buffer.from('{"schemaVersion":2,"x":1}'));
    store.tag({ registry: 'docker.io', name: 'library/nginx', tag: '1.27' }, { mediaType: MEDIA_TYPES.ociManifest, digest: manifestDigest, size: manifest.length });
    store.tag({ registry: 'other.io', name: 'app', tag: 'v1' }, { mediaType: MEDIA_TYPES.ociManifest, digest: manifestDigest, size: manifest.length });
    const metrics = createMirrorMetrics(new Registry());
    const handler = createRegistryHandler({ store, mirroredRegistries: parseMirroredRegistries('docker.io,http://127.0.0.1:5000'), logger: silentLogger, metrics });
    server = createServer(handler);
    base = `http://127.0.0.1:${await listen(server, { host: '127.0.0.1', port: 0 })}`;
  });
  after(() => close(server));

  it('answers the API version check', async () => {
    for (const method of ['GET', 'HEAD']) {
      const res = await fetch(`${base}/v2/`, { method });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
      assert.equal(await res.text(), method === 'GET' ? '{}' : '');
    }
  });

  it('serves a manifest by tag, with docker.io short names placed under library/', async () => {
    for (const path of ['/v2/library/nginx/manifests/1.27?ns=docker.io', '/v2/nginx/manifests/1.27?ns=docker.io']) {
      const res = await fetch(base + path);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get('content-type'), MEDIA_TYPES.ociManifest);
      assert.equal(res.headers.get('docker-content-digest'), manifestDigest.text);
      assert.equal(res.headers.get('content-length'), String(manifest.length));
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), manifest);
    }
  });

  it('answers HEAD by tag with headers and no body', async () => {
    const res = await fetch(`${base}/v2/library/nginx/manifests/1.27?ns=docker.io`, { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('docker-content-digest'), manifestDigest.text);
    assert.equal(res.headers.get('content-length'), String(manifest.length));
    assert.equal(await res.text(), '');
  });

  it('serves a manifest by digest, its media type read from the bytes', async () => {
    const res = await fetch(`${base}/v2/anything/manifests/${indexDigest.text}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), MEDIA_TYPES.ociIndex);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), index);
  });

  it('serves blobs whole, by range, and refuses unsatisfiable ranges', async () => {
    const whole = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers.get('accept-ranges'), 'bytes');
    assert.equal(whole.headers.get('docker-content-digest'), blobDigest.text);
    assert.deepEqual(Buffer.from(await whole.arrayBuffer()), blob);

    const part = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`, { headers: { Range: 'bytes=6-16' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('content-range'), `bytes 6-16/${blob.length}`);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), blob.subarray(6, 17));

    const tail = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`, { headers: { Range: 'bytes=-5' } });
    assert.equal(tail.status, 206);
    assert.deepEqual(Buffer.from(await tail.arrayBuffer()), blob.subarray(blob.length - 5));

    const open = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`, { headers: { Range: 'bytes=30-' } });
    assert.equal(open.headers.get('content-range'), `bytes 30-${blob.length - 1}/${blob.length}`);
    assert.deepEqual(Buffer.from(await open.arrayBuffer()), blob.subarray(30));

    const past = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`, { headers: { Range: `bytes=${blob.length}-` } });
    assert.equal(past.status, 416);
    assert.equal(past.headers.get('content-range'), `bytes */${blob.length}`);
    assert.deepEqual(await past.json(), err('UNSUPPORTED', 'range not satisfiable', { size: blob.length }));

    const head = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(blob.length));
  });

  it('never completes a blob whose bytes do not match its digest', async () => {
    // Headers may or may not have gone out before the mismatch shows: either way no complete body.
    await assert.rejects(fetch(`${base}/v2/x/blobs/${corruptDigest.text}`).then((res) => res.arrayBuffer()));
    const after = await fetch(`${base}/v2/x/blobs/${blobDigest.text}`);
    assert.deepEqual(Buffer.from(await after.arrayBuffer()), blob, 'still serving');
  });

  it('answers 404 for a stored manifest whose bytes do not match, and for content that is no manifest', async () => {
    for (const digest of [corruptManifestDigest, blobDigest]) {
      const res = await fetch(`${base}/v2/x/manifests/${digest.text}`);
      assert.equal(res.status, 404);
      assert.deepEqual(await res.json(), err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'x', reference: digest.text }));
    }
  });

  const table: [string, string, number, unknown][] = [
    ['GET', '/v2/library/nginx/manifests/1.27', 404, err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'library/nginx', reference: '1.27' })],
    ['GET', '/v2/app/manifests/v1?ns=other.io', 404, err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'app', reference: 'v1' })],
    ['GET', '/v2/library/nginx/manifests/9.99?ns=docker.io', 404, err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'library/nginx', reference: '9.99' })],
    ['GET', `/v2/x/manifests/${missing.text}`, 404, err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'x', reference: missing.text })],
    ['GET', `/v2/x/blobs/${missing.text}`, 404, err('BLOB_UNKNOWN', 'blob unknown to this node', { digest: missing.text })],
    ['GET', `/v2/Upper/blobs/${blobDigest.text}`, 400, err('NAME_INVALID', 'invalid repository name', { name: 'Upper' })],
    ['GET', `/v2/a/../b/blobs/${blobDigest.text}`, 400, err('NAME_INVALID', 'paths with . or .. segments are not accepted')],
    ['GET', `/v2/a/%2e%2e/blobs/${blobDigest.text}`, 400, err('NAME_INVALID', 'percent-encoded paths are not accepted')],
    ['GET', '/v2/x/blobs/sha256:1234', 400, err('DIGEST_INVALID', 'invalid sha256 digest "sha256:1234": want 64 lowercase hex characters')],
    ['GET', '/v2/x/blobs/sha256:../../etc/passwd', 400, err('NAME_INVALID', 'paths with . or .. segments are not accepted')],
    ['GET', '/v2/./x/blobs/sha256:abc', 400, err('NAME_INVALID', 'paths with . or .. segments are not accepted')],
    ['GET', '/v2/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e', 400, err('DIGEST_INVALID', 'unsupported digest algorithm "md5"')],
    ['GET', '/v2/x/blobs/notadigest', 400, err('DIGEST_INVALID', 'invalid digest "notadigest"')],
    ['GET', '/v2/x/manifests/-bad', 400, err('MANIFEST_INVALID', 'invalid tag', { tag: '-bad' })],
    ['GET', '/v2/_catalog', 404, err('UNSUPPORTED', 'not a pull route: this mirror serves manifests and blobs only', { path: '/v2/_catalog' })],
    ['GET', '/v2/x/tags/list', 404, err('UNSUPPORTED', 'not a pull route: this mirror serves manifests and blobs only', { path: '/v2/x/tags/list' })],
    ['POST', '/v2/x/blobs/uploads/', 405, err('UNSUPPORTED', 'POST is not supported: this mirror serves pulls only')],
    ['PUT', '/v2/x/manifests/v1', 405, err('UNSUPPORTED', 'PUT is not supported: this mirror serves pulls only')],
    ['DELETE', `/v2/x/blobs/${blobDigest.text}`, 405, err('UNSUPPORTED', 'DELETE is not supported: this mirror serves pulls only')],
  ];
  for (const [method, path, status, body] of table) {
    it(`${method} ${path.slice(0, 60)} → ${status}`, async () => {
      const res = await rawRequest(base, method, path);
      assert.equal(res.status, status);
      assert.equal(res.headers['content-type'], 'application/json');
      assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
      assert.deepEqual(JSON.parse(res.body.toString()), body);
    });
  }

  it('answers HEAD misses with the status and no body', async () => {
    const res = await fetch(`${base}/v2/x/blobs/${missing.text}`, { method: 'HEAD' });
    assert.equal(res.status, 404);
    assert.equal(await res.text(), '');
  });
});
