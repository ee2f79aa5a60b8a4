import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { digestOf, type Digest } from '../digest.ts';
import { basicAuthorization } from './auth.ts';
import type { UpstreamBlob } from './blob.ts';
import { Http1Client } from '../http1/client.ts';
import { UpstreamClient, type UpstreamClientInit } from './client.ts';
import { http1Fetch } from './http1-fetch.ts';
import { closedAfterEach, startServer, startTokenServer, testManifest, type SeenRequest, type TestServer, type TokenServer, failsWith } from './testing.ts';
import { type RegistryCredentials } from './types.ts';

const signal = () => AbortSignal.timeout(10_000);

async function readAll(blob: UpstreamBlob): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of blob.body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** How the fake blob server answers; change fields between requests. */
interface BlobKnobs {
  /** Statuses to answer with first, one request each, before serving (5xx, 429, ...). */
  statuses: number[];
  /** Answer Range requests with the whole blob (200). */
  ignoreRange?: boolean;
  /** Send this Content-Range on a 206 instead of the right one. */
  contentRange?: string;
  /** Never answer; or answer, then send nothing; or send this many body bytes, then nothing. */
  silent?: 'answer' | 'body' | number;
  /** Leave Content-Length out (chunked) and end the body after this many bytes. */
  endAfter?: number;
  contentEncoding?: string;
  /** Blob GETs are redirected here, digest appended. */
  redirectTo?: string;
}

interface BlobServer extends TestServer {
  readonly knobs: BlobKnobs;
  readonly blobRequests: () => SeenRequest[];
}

const WRITE_PIECE = 7000;

/**
 * Serves `bytes` for any path ending in `digest`, honouring `Range: bytes=N-`
 * unless told otherwise, written in pieces so that the client sees several chunks.
 */
async function serveBytes(req: SeenRequest, res: ServerResponse, bytes: Buffer, knobs: BlobKnobs): Promise<void> {
  if (knobs.silent === 'answer') return;
  const range = /^bytes=([0-9]+)-$/.exec(req.headers.range ?? '');
  const from = range && !knobs.ignoreRange ? Number(range[1]) : 0;
  const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
  if (knobs.endAfter === undefined) headers['content-length'] = bytes.length - from;
  if (knobs.contentEncoding !== undefined) headers['content-encoding'] = knobs.contentEncoding;
  if (from > 0) headers['content-range'] = knobs.contentRange ?? `bytes ${from}-${bytes.length - 1}/${bytes.length}`;
  res.writeHead(from > 0 ? 206 : 200, headers);
  res.flushHeaders();
  if (knobs.silent === 'body') return;
  const end = typeof knobs.silent === 'number' ? from + knobs.silent : knobs.endAfter !== undefined ? from + knobs.endAfter : bytes.length;
  for (let at = from; at < end && !res.destroyed; at += WRITE_PIECE) {
    res.write(bytes.subarray(at, Math.min(end, at + WRITE_PIECE)));
    await sleep(1);
  }
  if (typeof knobs.silent !== 'number') res.end();
}

const manifest = testManifest('blob-tests');

/** A registry holding one blob (and the manifest `v1`) in `repository`, optionally behind Basic auth or Bearer tokens. */
async function startBlobRegistry(repository: string, bytes: Buffer, auth?: { basic: RegistryCredentials & { kind: 'basic' } } | { bearer: TokenServer }): Promise<BlobServer & { digest: Digest }> {
  const digest = digestOf(bytes);
  const knobs: BlobKnobs = { statuses: [] };
  const server = await startServer(async (req, res) => {
    if (auth !== undefined && !authorized(req, repository, auth)) {
      const challenge = 'basic' in auth ? 'Basic realm="fake"' : `Bearer realm="${auth.bearer.url}/token",service="fake",scope="repository:${repository}:pull"`;
      res.writeHead(401, { 'www-authenticate': challenge }).end();
      return;
    }
    const status = knobs.statuses.shift();
    if (status !== undefined) {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: status === 404 ? 'BLOB_UNKNOWN' : 'OTHER', message: `status ${status}` }] }));
      return;
    }
    if (req.url === `/v2/${repository}/manifests/v1`) {
      res.writeHead(200, { 'content-type': manifest.mediaType, 'docker-content-digest': manifest.digest }).end(manifest.bytes);
      return;
    }
    if (req.url !== `/v2/${repository}/blobs/${digest.text}`) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry' }] }));
      return;
    }
    if (knobs.redirectTo !== undefined) {
      res.writeHead(307, { location: `${knobs.redirectTo}/${digest.text}?signature=abc` }).end();
      return;
    }
    await serveBytes(req, res, bytes, knobs);
  });
  return { ...server, knobs, digest, blobRequests: () => server.requests.filter((r) => r.url.includes('/blobs/')) };
}

function authorized(req: SeenRequest, repository: string, auth: { basic: RegistryCredentials & { kind: 'basic' } } | { bearer: TokenServer }): boolean {
  const header = req.headers.authorization ?? '';
  if ('basic' in auth) return header === basicAuthorization(auth.basic.username, auth.basic.password);
  const token = /^Bearer (.+)$/.exec(header)?.[1];
  return token !== undefined && auth.bearer.grants(token, `repository:${repository}:pull`, 'fake');
}

// Every case runs on both transports a blob can take: Node's fetch, and the pooled client the mirror uses (http1-fetch.ts).
for (const transport of ['fetch', 'the pooled HTTP/1.1 client'] as const) describe(`UpstreamClient.openBlob over ${transport}`, function () {
  const track = closedAfterEach();
  let pooled: Http1Client;
  beforeEach(function () {
    pooled = new Http1Client({ idleTimeoutMs: 10_000 });
  });
  afterEach(function () {
    pooled.close();
  });

  const bytes = randomBytes(300 * 1024);
  const clientFor = (registries: readonly TestServer[], init: UpstreamClientInit = {}) =>
    new UpstreamClient({
      plainHttpRegistries: registries.map((s) => s.host),
      requestTimeoutMs: 1000,
      retries: 2,
      retryBaseDelayMs: 5,
      blobFetch: transport === 'fetch' ? undefined : http1Fetch(pooled, globalThis.fetch),
      ...init,
    });

  describe('streaming', function () {
    let registry: BlobServer & { digest: Digest };
    beforeEach(async function () {
      registry = track(await startBlobRegistry('team/app', bytes));
    });

    it('streams a whole blob with one GET, no Range, and identity encoding', async function () {
      const blob = await clientFor([registry]).openBlob(registry.host, 'team/app', registry.digest, [], { signal: signal() });
      assert.equal(blob.size, bytes.length);
      assert.equal(blob.offset, 0);
      assert.ok((await readAll(blob)).equals(bytes));
      const [get, ...rest] = registry.requests;
      assert.equal(rest.length, 0);
      assert.equal(get?.method, 'GET');
      assert.equal(get?.url, `/v2/team/app/blobs/${registry.digest.text}`);
      assert.equal(get?.headers.range, undefined);
      assert.equal(get?.headers['accept-encoding'], 'identity');
      assert.equal(get?.headers['user-agent'], 'shoal');
    });

    it('streams an empty blob', async function () {
      const empty = track(await startBlobRegistry('team/empty', Buffer.alloc(0)));
      const blob = await clientFor([empty]).openBlob(empty.host, 'team/empty', empty.digest, [], { signal: signal() });
      assert.equal(blob.size, 0);
      assert.equal((await readAll(blob)).length, 0);
    });

    it('asks for the bytes from an offset with a Range and takes the 206', async function () {
      const blob = await clientFor([registry]).openBlob(registry.host, 'team/app', registry.digest, [], { offset: 100_001, signal: signal() });
      assert.deepEqual({ size: blob.size, offset: blob.offset }, { size: bytes.length, offset: 100_001 });
      assert.ok((await readAll(blob)).equals(bytes.subarray(100_001)));
      assert.equal(registry.requests[0]?.headers.range, 'bytes=100001-');
    });

    it('skips the first bytes of a 200 to a Range request, across chunk boundaries', async function () {
      registry.knobs.ignoreRange = true;
      const client = clientFor([registry]);
      for (const offset of [1, WRITE_PIECE, WRITE_PIECE * 3 + 17, bytes.length - 1, bytes.length]) {
        const blob = await client.openBlob(registry.host, 'team/app', registry.digest, [], { offset, signal: signal() });
        assert.deepEqual({ size: blob.size, offset: blob.offset }, { size: bytes.length, offset });
        assert.ok((await readAll(blob)).equals(bytes.subarray(offset)), `offset ${offset}`);
      }
    });

    it('refuses a 206 for another range than the one asked for, without retrying', async function () {
      registry.knobs.contentRange = `bytes 0-${bytes.length - 1}/${bytes.length}`;
      const open = clientFor([registry]).openBlob(registry.host, 'team/app', registry.digest, [], { offset: 10, signal: signal() });
      await assert.rejects(open, failsWith('invalid', 206, /Content-Range/));
      assert.equal(registry.requests.length, 1);
    });

    it('refuses a blob sent with a Content-Encoding', async function () {
      registry.knobs.contentEncoding = 'gzip';
      await assert.rejects(clientFor([registry]).openBlob(registry.host, 'team/app', registry.digest, [], { signal: signal() }), failsWith('invalid', 200, /Content-Encoding/));
    });

    it('fails the body when it ends short', async function () {
      registry.knobs.endAfter = 50_000;
      const blob = await clientFor([registry]).openBlob(registry.host, 'team/app', registry.digest, [], { offset: 5, signal: signal() });
      await assert.rejects(readAll(blob), failsWith('unavailable', undefined, /ended after 50000 of 307195 bytes/));
    });

    it('close() drops the connection mid-body', async function () {
      const closed = Promise.withResolvers<void>();
      const server = track(
        await startServer(async (req, res) => {
          res.on('close', () => closed.resolve());
          await serveBytes(req, res, bytes, { statuses: [], silent: 20_000 });
        }),
      );
      const blob = await clientFor([server]).openBlob(server.host, 'team/app', digestOf(bytes), [], { signal: signal() });
      blob.close();
      blob.close();
      // Without the close, the server would keep its response open: the test would time out here.
      await closed.promise;
    });
  });

  describe('redirects and credentials', function () {
    it('follows a redirect to another origin without Authorization, keeping the Range', async function () {
      const cdnKnobs: BlobKnobs = { statuses: [] };
      const cdn = track(await startServer((req, res) => serveBytes(req, res, bytes, cdnKnobs)));
      const alice = { kind: 'basic', username: 'alice', password: 'secret' } as const;
      const registry = track(await startBlobRegistry('team/app', bytes, { basic: alice }));
      registry.knobs.redirectTo = `${cdn.url}/cdn`;
      const blob = await clientFor([registry, cdn]).openBlob(registry.host, 'team/app', registry.digest, [alice], { offset: 4096, signal: signal() });
      assert.equal(blob.size, bytes.length);
      assert.ok((await readAll(blob)).equals(bytes.subarray(4096)));

      assert.deepEqual(
        registry.requests.map((r) => [r.headers.authorization ?? 'none', r.headers.range]),
        [
          ['none', 'bytes=4096-'],
          [basicAuthorization('alice', 'secret'), 'bytes=4096-'],
        ],
      );
      assert.equal(cdn.requests.length, 1);
      assert.equal(cdn.requests[0]?.url, `/cdn/${registry.digest.text}?signature=abc`);
      assert.equal(cdn.requests[0]?.headers.authorization, undefined, 'the CDN got no Authorization');
      assert.equal(cdn.requests[0]?.headers.range, 'bytes=4096-');
    });

    it('shares the token cache with manifests: one token for a manifest and several blobs', async function () {
      const tokens = track(await startTokenServer({ users: { alice: 'secret' } }));
      const registry = track(await startBlobRegistry('team/app', bytes, { bearer: tokens }));
      const client = clientFor([registry, tokens]);
      const alice: RegistryCredentials = { kind: 'basic', username: 'alice', password: 'secret' };
      assert.equal((await client.getManifest(registry.host, 'team/app', 'v1', [alice], signal())).descriptor.digest.text, manifest.digest);
      for (let i = 0; i < 3; i++) {
        const blob = await client.openBlob(registry.host, 'team/app', registry.digest, [alice], { offset: i, signal: signal() });
        assert.ok((await readAll(blob)).equals(bytes.subarray(i)));
      }
      assert.equal(tokens.issued, 1);
      assert.deepEqual(
        registry.requests.map((r) => `${r.url.includes('/blobs/') ? 'blob' : 'manifest'} ${(r.headers.authorization ?? 'none').split(' ')[0]}`),
        ['manifest none', 'manifest Bearer', 'blob Bearer', 'blob Bearer', 'blob Bearer'],
        'after the manifest’s challenge, blobs get the token up front',
      );
    });

    it('is unauthorized when every credential is refused', async function () {
      const registry = track(await startBlobRegistry('team/app', bytes, { basic: { kind: 'basic', username: 'alice', password: 'secret' } }));
      const wrong: RegistryCredentials = { kind: 'basic', username: 'alice', password: 'nope' };
      await assert.rejects(clientFor([registry]).openBlob(registry.host, 'team/app', registry.digest, [wrong], { signal: signal() }), failsWith('unauthorized', 401));
    });
  });

  describe('failures, retries and the circuit breaker', function () {
    let registry: BlobServer & { digest: Digest };
    beforeEach(async function () {
      registry = track(await startBlobRegistry('team/app', bytes));
    });
    const open = (client: UpstreamClient, offset = 0) => client.openBlob(registry.host, 'team/app', registry.digest, [], { offset, signal: signal(), idleTimeoutMs: 150 });

    it('retries 5xx before the first byte, and streams once the registry recovers', async function () {
      registry.knobs.statuses = [503, 502];
      const blob = await open(clientFor([registry]));
      assert.ok((await readAll(blob)).equals(bytes));
      assert.equal(registry.blobRequests().length, 3);
    });

    it('is unavailable after 1 + retries attempts of 5xx', async function () {
      registry.knobs.statuses = [503, 503, 503, 503];
      await assert.rejects(open(clientFor([registry])), failsWith('unavailable', 503));
      assert.equal(registry.blobRequests().length, 3);
    });

    for (const [status, failure] of [
      [404, 'not-found'],
      [429, 'rate-limited'],
      [401, 'unauthorized'],
      [403, 'unauthorized'],
    ] as const) {
      it(`does not retry ${status}: ${failure}`, async function () {
        registry.knobs.statuses = [status, status, status];
        await assert.rejects(open(clientFor([registry])), failsWith(failure, status));
        assert.equal(registry.blobRequests().length, 1);
      });
    }

    it('names the registry’s error code for a blob it does not have', async function () {
      const other = digestOf(Buffer.from('other'));
      await assert.rejects(clientFor([registry]).openBlob(registry.host, 'team/app', other, [], { signal: signal() }), failsWith('not-found', 404, /BLOB_UNKNOWN/));
    });

    it('retries an answer that does not come within the idle timeout', async function () {
      registry.knobs.silent = 'answer';
      const started = performance.now();
      await assert.rejects(open(clientFor([registry])), failsWith('unavailable', undefined, /no answer within 150 ms/));
      assert.equal(registry.blobRequests().length, 3);
      assert.ok(performance.now() - started < 2000);
    });

    it('retries an answer whose first byte does not come', async function () {
      registry.knobs.silent = 'body';
      await assert.rejects(open(clientFor([registry])), failsWith('unavailable', undefined, /sent nothing for 150 ms after 0 bytes/));
      assert.equal(registry.blobRequests().length, 3);
    });

    it('cuts a body that goes silent mid-way, without retrying: the caller resumes', async function () {
      registry.knobs.silent = 3 * WRITE_PIECE;
      const blob = await open(clientFor([registry]));
      const got: Uint8Array[] = [];
      const started = performance.now();
      await assert.rejects(
        (async () => {
          for await (const chunk of blob.body) got.push(chunk);
        })(),
        failsWith('unavailable', undefined, /sent nothing for 150 ms after 21000 bytes/),
      );
      assert.ok(performance.now() - started < 1500);
      assert.ok(Buffer.concat(got).equals(bytes.subarray(0, 3 * WRITE_PIECE)));
      assert.equal(registry.blobRequests().length, 1);

      registry.knobs.silent = undefined;
      const rest = await open(clientFor([registry]), 3 * WRITE_PIECE);
      assert.ok(Buffer.concat([...got, await readAll(rest)]).equals(bytes));
    });

    it('does not count a slow reader’s time as the registry’s silence', async function () {
      const blob = await open(clientFor([registry]));
      const chunks: Uint8Array[] = [];
      for await (const chunk of blob.body) {
        chunks.push(chunk);
        if (chunks.length <= 3) await sleep(300);
      }
      assert.ok(Buffer.concat(chunks).equals(bytes));
    });

    it('gives up with the caller’s reason when its signal fires mid-body', async function () {
      registry.knobs.silent = WRITE_PIECE;
      const controller = new AbortController();
      const blob = await clientFor([registry]).openBlob(registry.host, 'team/app', registry.digest, [], { signal: controller.signal, idleTimeoutMs: 5000 });
      const reading = readAll(blob);
      await sleep(20);
      controller.abort(new Error('client went away'));
      await assert.rejects(reading, /^Error: client went away$/);
    });

    it('feeds the registry’s circuit breaker and fails fast when it is open', async function () {
      registry.knobs.statuses = [503, 503, 503, 503];
      const client = clientFor([registry], { retries: 0, circuitFailureThreshold: 2 });
      await assert.rejects(open(client), failsWith('unavailable'));
      await assert.rejects(open(client), failsWith('unavailable'));
      assert.equal(client.circuitState(registry.host), 'open');
      await assert.rejects(open(client), failsWith('circuit-open'));
      assert.equal(registry.blobRequests().length, 2);
    });
  });
});
