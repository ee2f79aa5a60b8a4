/**
 * Upstream blobs against the real CNCF registry: a pushed layer streamed
 * whole and from an offset (distribution answers the Range with a 206),
 * anonymously and behind htpasswd; then a spool download of it from the
 * registry, shared by readers of the whole and of a slice, with one GET
 * upstream.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseDigest } from '../../shared/digest.ts';
import type { UpstreamBlob } from '../../shared/distribution/blob.ts';
import { UpstreamClient } from '../../shared/distribution/client.ts';
import { type RegistryCredentials } from '../../shared/distribution/types.ts';
import { Spool } from '../../mirror/spool/spool.ts';
import { isResumableUpstreamFailure, upstreamSource } from '../../mirror/spool/upstream-source.ts';
import { buildAndPush, type Blob, type PushedImage } from '../harness/images.ts';
import { stopAll, waitUntil } from '../harness/procs.ts';
import { startRegistry, type Registry } from '../harness/registry.ts';
import { createRunDir } from '../harness/runs.ts';
import { failsWith } from '../../shared/distribution/testing.ts';
import { http1Fetch } from '../../shared/distribution/http1-fetch.ts';
import { Http1Client } from '../../shared/http1/client.ts';
import { createCertificateAuthority, issueServingCertificate } from '../../webhook/tls/self-signed.ts';

const signal = () => AbortSignal.timeout(30_000);
const ALICE = { user: 'alice', password: 'alice-e2e-secret' };
const LAYER_BYTES = 3 * 1024 * 1024;

async function readAll(blob: UpstreamBlob): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of blob.body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe('upstream blobs against the real registry', function () {
  this.timeout(120_000);
  let runDir: string;
  let open: Registry | undefined;
  let basic: Registry | undefined;
  let secure: Registry | undefined;
  let image: PushedImage;
  let privateImage: PushedImage;

  const client = (registry: Registry | undefined) => new UpstreamClient({ plainHttpRegistries: [registry!.host], requestTimeoutMs: 5000 });
  /** The image's largest blob: its layer. */
  const layerOf = (pushed: PushedImage): Blob => [...pushed.blobs].sort((a, b) => b.size - a.size)[0]!;

  before(async function () {
    runDir = await createRunDir();
    open = await startRegistry({ dir: join(runDir, 'open') });
    basic = await startRegistry({ dir: join(runDir, 'basic'), htpasswd: ALICE });
    image = await buildAndPush({ dir: join(runDir, 'img'), layers: [LAYER_BYTES], registry: open.host, repo: 'test/blobs', tag: 'v1' });
    privateImage = await buildAndPush({ dir: join(runDir, 'img-private'), layers: [LAYER_BYTES], registry: basic.host, repo: 'test/private', tag: 'v1', credentials: ALICE });
  });

  after(async function () {
    await stopAll(open, basic, secure);
  });

  describe('anonymous', function () {
    it('streams a pushed layer whole, byte for byte, with one GET', async function () {
      const layer = layerOf(image);
      const before = open!.requests().length;
      const blob = await client(open).openBlob(open!.host, 'test/blobs', parseDigest(layer.digest), [], { signal: signal() });
      assert.equal(blob.size, layer.size);
      assert.ok((await readAll(blob)).equals(image.bytes(layer.digest)));
      assert.deepEqual(
        (await open!.requestsSince(before, 1)).map((r) => `${r.method} ${r.path} ${r.status} ${r.bytes}`),
        [`GET /v2/test/blobs/blobs/${layer.digest} 200 ${layer.size}`],
      );
    });

    it('streams it from an offset: the registry answers the Range with a 206', async function () {
      const layer = layerOf(image);
      const original = image.bytes(layer.digest);
      const c = client(open);
      for (const offset of [1, 1_000_001, layer.size - 1]) {
        const before = open!.requests().length;
        const blob = await c.openBlob(open!.host, 'test/blobs', parseDigest(layer.digest), [], { offset, signal: signal() });
        assert.deepEqual({ size: blob.size, offset: blob.offset }, { size: layer.size, offset });
        assert.ok((await readAll(blob)).equals(original.subarray(offset)), `offset ${offset}`);
        assert.deepEqual(
          (await open!.requestsSince(before, 1)).map((r) => `${r.status} ${r.bytes}`),
          [`206 ${layer.size - offset}`],
        );
      }
    });

    it('says not-found for a blob the registry does not have', async function () {
      const missing = parseDigest(`sha256:${'0'.repeat(64)}`);
      await assert.rejects(client(open).openBlob(open!.host, 'test/blobs', missing, [], { signal: signal() }), (err: unknown) => failsWith('not-found', 404)(err) && /BLOB_UNKNOWN/.test((err as Error).message));
    });
  });

  describe('htpasswd (Basic)', function () {
    const right: RegistryCredentials = { kind: 'basic', username: ALICE.user, password: ALICE.password };
    const wrong: RegistryCredentials = { kind: 'basic', username: ALICE.user, password: 'not-it' };

    it('streams whole and from an offset with the right credentials, also after a wrong one', async function () {
      const layer = layerOf(privateImage);
      const original = privateImage.bytes(layer.digest);
      const c = client(basic);
      const before = basic!.requests().length;
      const whole = await c.openBlob(basic!.host, 'test/private', parseDigest(layer.digest), [right], { signal: signal() });
      assert.ok((await readAll(whole)).equals(original));
      const tail = await c.openBlob(basic!.host, 'test/private', parseDigest(layer.digest), [wrong, right], { offset: 123_457, signal: signal() });
      assert.ok((await readAll(tail)).equals(original.subarray(123_457)));
      // The registry logs a request after answering it: the next test counts from after this one's last line.
      await waitUntil(() => Promise.resolve(basic!.requests().slice(before).some((r) => r.status === 206)), { what: 'the 206 in the registry log', timeoutMs: 5000, intervalMs: 10 });
    });

    it('is unauthorized without credentials or with wrong ones, and does not retry', async function () {
      const layer = layerOf(privateImage);
      const before = basic!.requests().length;
      await assert.rejects(client(basic).openBlob(basic!.host, 'test/private', parseDigest(layer.digest), [], { signal: signal() }), failsWith('unauthorized', 401));
      await assert.rejects(client(basic).openBlob(basic!.host, 'test/private', parseDigest(layer.digest), [wrong], { signal: signal() }), failsWith('unauthorized', 401));
      assert.deepEqual(
        (await basic!.requestsSince(before, 3)).map((r) => r.status),
        [401, 401, 401],
        'anonymous: one request; wrong password: the challenge, then one answer',
      );
    });
  });

  describe('through the spool', function () {
    it('downloads a layer once while readers share it, and leaves nothing behind', async function () {
      const layer = layerOf(image);
      const digest = parseDigest(layer.digest);
      const original = image.bytes(layer.digest);
      const dir = join(runDir, 'spool');
      const spool = await Spool.open({ dir, maxBytes: 64 * 1024 * 1024, lingerMs: 0, isResumable: isResumableUpstreamFailure });
      try {
        const c = client(open);
        const before = open!.requests().length;
        const opened = await c.openBlob(open!.host, 'test/blobs', digest, [], { signal: signal() });
        const entry = spool.download(digest, opened.size, upstreamSource({ client: c, registry: open!.host, repository: 'test/blobs', digest, credentials: [], opened }))!;
        assert.ok(entry !== undefined);
        const collect = async (slice?: { start: number; end: number }) => {
          const chunks: Uint8Array[] = [];
          for await (const chunk of entry.reader(slice)) chunks.push(chunk);
          return Buffer.concat(chunks);
        };
        const first = collect();
        const middle = collect({ start: 1_000_000, end: 2_000_000 });
        assert.equal(spool.download(digest, layer.size, () => Promise.reject(new Error('a second download'))), entry);
        const [whole, slice] = await Promise.all([first, middle]);
        assert.ok(whole.equals(original));
        assert.ok(slice.equals(original.subarray(1_000_000, 2_000_001)));
        assert.equal(entry.state, 'complete');
        assert.deepEqual(
          (await open!.requestsSince(before, 1)).map((r) => `${r.method} ${r.status} ${r.bytes}`),
          [`GET 200 ${layer.size}`],
          'one upstream download',
        );
        assert.equal(spool.get(digest), undefined, 'gone after its last reader');
      } finally {
        await spool.close();
      }
    });
  });
  describe('over TLS, on the pooled HTTP/1.1 client the mirror uses', function () {
    const ca = createCertificateAuthority();
    const serving = issueServingCertificate(ca, { dnsNames: ['localhost'] });
    let secureImage: PushedImage;
    let pooled: Http1Client;
    let fellBack: string[];
    /** The registry by the name its certificate carries. */
    let name: string;

    before(async function () {
      secure = await startRegistry({ dir: join(runDir, 'secure'), tls: { cert: serving.cert, key: serving.key, ca: ca.certPem } });
      name = secure.host.replace('127.0.0.1', 'localhost');
      secureImage = await buildAndPush({ dir: join(runDir, 'img-secure'), layers: [LAYER_BYTES], registry: secure.host, repo: 'test/secure', tag: 'v1' });
    });
    beforeEach(function () {
      pooled = new Http1Client({ idleTimeoutMs: 10_000, ca: ca.certPem });
      fellBack = [];
    });
    afterEach(function () {
      pooled.close();
    });
    const tlsClient = () =>
      new UpstreamClient({
        requestTimeoutMs: 5000,
        retries: 0,
        blobFetch: http1Fetch(pooled, (input, init) => {
          fellBack.push(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
          return fetch(input, init);
        }),
      });

    it('streams a layer whole and from an offset over TLS, without falling back to fetch', async function () {
      const layer = layerOf(secureImage);
      const original = secureImage.bytes(layer.digest);
      const c = tlsClient();
      const before = secure!.requests().length;
      const whole = await c.openBlob(name, 'test/secure', parseDigest(layer.digest), [], { signal: signal() });
      assert.ok((await readAll(whole)).equals(original));
      const tail = await c.openBlob(name, 'test/secure', parseDigest(layer.digest), [], { offset: 1_000_001, signal: signal() });
      assert.ok((await readAll(tail)).equals(original.subarray(1_000_001)));
      assert.deepEqual(
        (await secure!.requestsSince(before, 2)).map((r) => `${r.status} ${r.bytes}`),
        [`200 ${layer.size}`, `206 ${layer.size - 1_000_001}`],
      );
      assert.deepEqual(fellBack, []);
    });

    it('downloads a layer into the spool over TLS, shared by a reader of the whole and one of a slice', async function () {
      const layer = layerOf(secureImage);
      const digest = parseDigest(layer.digest);
      const original = secureImage.bytes(layer.digest);
      const spool = await Spool.open({ dir: join(runDir, 'spool-secure'), maxBytes: 64 * 1024 * 1024, lingerMs: 0, isResumable: isResumableUpstreamFailure });
      try {
        const c = tlsClient();
        const opened = await c.openBlob(name, 'test/secure', digest, [], { signal: signal() });
        const entry = spool.download(digest, opened.size, upstreamSource({ client: c, registry: name, repository: 'test/secure', digest, credentials: [], opened }))!;
        const collect = async (slice?: { start: number; end: number }) => {
          const chunks: Uint8Array[] = [];
          for await (const chunk of entry.reader(slice)) chunks.push(Buffer.from(chunk));
          return Buffer.concat(chunks);
        };
        const [whole, slice] = await Promise.all([collect(), collect({ start: 5, end: 2_000_000 })]);
        assert.ok(whole.equals(original));
        assert.ok(slice.equals(original.subarray(5, 2_000_001)));
        assert.equal(entry.state, 'complete');
        assert.deepEqual(fellBack, []);
      } finally {
        await spool.close();
      }
    });

    it('refuses a certificate that does not name the host asked for', async function () {
      const layer = layerOf(secureImage);
      // The certificate names localhost, not 127.0.0.1.
      await assert.rejects(tlsClient().openBlob(secure!.host, 'test/secure', parseDigest(layer.digest), [], { signal: signal() }), (err: unknown) => failsWith('unavailable')(err) && /127\.0\.0\.1/.test((err as Error).message));
    });
  });
});
