import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { digestOf, parseDigest } from '../digest.ts';
import { parseImageRef } from '../image-ref.ts';
import { createLogger } from '../log.ts';
import { MANIFEST_MEDIA_TYPES, MAX_MANIFEST_BYTES, MEDIA_TYPES } from '../media-types.ts';
import { basicAuthorization } from './auth.ts';
import { UpstreamClient, type UpstreamClientInit } from './client.ts';
import { captureLines, closedAfterEach, startFakeRegistry, startServer, startTokenServer, testIndex, testManifest, type FakeRegistry, type TestServer, type TokenServer, failsWith } from './testing.ts';
import type { RegistryCredentials, UpstreamFailure } from './types.ts';

const signal = () => AbortSignal.timeout(10_000);

/** A client for plain-http test servers, quick to give up. */
function clientFor(servers: readonly TestServer[], init: UpstreamClientInit = {}): UpstreamClient {
  return new UpstreamClient({ plainHttpRegistries: servers.map((s) => s.host), requestTimeoutMs: 1000, retries: 2, retryBaseDelayMs: 5, ...init });
}

describe('UpstreamClient', function () {
  const track = closedAfterEach();

  describe('manifests, anonymous', function () {
    let registry: FakeRegistry;
    const app = testManifest('app');
    beforeEach(async function () {
      registry = track(await startFakeRegistry());
      registry.put('team/app', 'v1', app);
    });

    it('resolves a tag with one HEAD carrying every manifest media type in Accept', async function () {
      const client = clientFor([registry]);
      const descriptor = await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [], signal());
      assert.deepEqual(descriptor, { digest: parseDigest(app.digest), mediaType: MEDIA_TYPES.ociManifest, size: app.bytes.length });
      const [head, ...rest] = registry.requests;
      assert.equal(rest.length, 0);
      assert.equal(head?.method, 'HEAD');
      assert.equal(head?.url, '/v2/team/app/manifests/v1');
      const accepted = String(head?.headers.accept).split(',').map((s) => s.trim());
      assert.deepEqual([...accepted].sort(), [...MANIFEST_MEDIA_TYPES].sort());
      assert.equal(head?.headers['user-agent'], 'shoal');
      assert.equal(head?.headers.authorization, undefined);
    });

    it('resolves no tag as latest', async function () {
      registry.put('team/app', 'latest', app);
      const descriptor = await clientFor([registry]).resolve(parseImageRef(`${registry.host}/team/app`), [], signal());
      assert.equal(descriptor.digest.text, app.digest);
      assert.equal(registry.requests[0]?.url, '/v2/team/app/manifests/latest');
    });

    it('pins a multi-arch image to its index digest, never following it to a platform', async function () {
      const index = testIndex([testManifest('amd64'), testManifest('arm64')]);
      registry.put('team/multi', 'v1', index);
      const client = clientFor([registry]);
      assert.equal((await client.resolve(parseImageRef(`${registry.host}/team/multi:v1`), [], signal())).digest.text, index.digest);
      registry.knobs.omitDigest = true;
      const hashed = await client.resolve(parseImageRef(`${registry.host}/team/multi:v1`), [], signal());
      assert.deepEqual(hashed, { digest: parseDigest(index.digest), mediaType: MEDIA_TYPES.ociIndex, size: index.bytes.length });
      assert.deepEqual(
        registry.manifestRequests().map((r) => `${r.method} ${r.url}`),
        ['HEAD /v2/team/multi/manifests/v1', 'HEAD /v2/team/multi/manifests/v1', 'GET /v2/team/multi/manifests/v1'],
      );
    });

    it('without Docker-Content-Digest, GETs the manifest and hashes the exact bytes', async function () {
      registry.knobs.omitDigest = true;
      const client = clientFor([registry]);
      const descriptor = await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [], signal());
      assert.equal(descriptor.digest.text, app.digest);
      assert.deepEqual(
        registry.requests.map((r) => r.method),
        ['HEAD', 'GET'],
      );
      const { bytes } = await client.getManifest(registry.host, 'team/app', 'v1', [], signal());
      assert.ok(bytes.equals(app.bytes), 'bytes kept exactly, whitespace and all');
    });

    it('falls back to GET when HEAD is not served', async function () {
      registry.knobs.headStatus = 405;
      const descriptor = await clientFor([registry]).resolve(parseImageRef(`${registry.host}/team/app:v1`), [], signal());
      assert.equal(descriptor.digest.text, app.digest);
    });

    it('takes the media type from the body when Content-Type is not a manifest type', async function () {
      registry.knobs.contentType = 'application/json; charset=utf-8';
      const { descriptor } = await clientFor([registry]).getManifest(registry.host, 'team/app', 'v1', [], signal());
      assert.equal(descriptor.mediaType, MEDIA_TYPES.ociManifest);
    });

    it('fails as invalid when Docker-Content-Digest lies', async function () {
      registry.knobs.lyingDigest = digestOf(Buffer.from('something else')).text;
      const client = clientFor([registry]);
      await assert.rejects(client.getManifest(registry.host, 'team/app', 'v1', [], signal()), failsWith('invalid'));
      registry.knobs.lyingDigest = 'sha256:not-hex';
      await assert.rejects(client.getManifest(registry.host, 'team/app', 'v1', [], signal()), failsWith('invalid'));
    });

    it('checks a manifest fetched by digest against that digest', async function () {
      const client = clientFor([registry]);
      const { descriptor, bytes } = await client.getManifest(registry.host, 'team/app', parseDigest(app.digest), [], signal());
      assert.equal(descriptor.digest.text, app.digest);
      assert.ok(bytes.equals(app.bytes));
      // A registry serving other bytes under the digest, with or without the header, is caught.
      const other = testManifest('other');
      registry.put('team/app', 'v2', { ...other, digest: app.digest });
      registry.knobs.omitDigest = true;
      const wrong = client.getManifest(registry.host, 'team/app', parseDigest(app.digest), [], signal());
      await assert.rejects(wrong, (err: unknown) => failsWith('invalid')(err) && /hashes to/.test((err as Error).message));
    });

    it('resolves a reference with a digest by checking the registry names the same one', async function () {
      const ref = parseImageRef(`${registry.host}/team/app@${app.digest}`);
      assert.equal((await clientFor([registry]).resolve(ref, [], signal())).digest.text, app.digest);
      assert.equal(registry.requests[0]?.url, `/v2/team/app/manifests/${app.digest}`);
    });

    it('says not-found for an unknown tag or repository, with the registry’s error code', async function () {
      const client = clientFor([registry]);
      await assert.rejects(client.resolve(parseImageRef(`${registry.host}/team/app:nope`), [], signal()), failsWith('not-found', 404));
      await assert.rejects(client.getManifest(registry.host, 'team/app', 'nope', [], signal()), (err: unknown) => failsWith('not-found')(err) && /MANIFEST_UNKNOWN/.test((err as Error).message));
      assert.equal(registry.requests.length, 2, 'a 404 is not retried');
    });

    it('refuses a manifest larger than distribution’s 4 MiB limit', async function () {
      const big = track(
        await startServer((_req, res) => {
          res.writeHead(200, { 'content-type': MEDIA_TYPES.ociManifest, 'content-length': MAX_MANIFEST_BYTES + 1 });
          res.end(Buffer.alloc(MAX_MANIFEST_BYTES + 1));
        }),
      );
      await assert.rejects(clientFor([big]).getManifest(big.host, 'a', 'v1', [], signal()), failsWith('invalid'));
    });

    it('talks https to registries not listed as plain http, and Docker Hub at registry-1.docker.io', async function () {
      const urls: string[] = [];
      const fake: typeof fetch = (input) => {
        urls.push(input instanceof Request ? input.url : typeof input === 'string' ? input : input.href);
        return Promise.resolve(new Response(null, { status: 200, headers: { 'docker-content-digest': app.digest, 'content-type': app.mediaType, 'content-length': String(app.bytes.length) } }));
      };
      const client = new UpstreamClient({ fetch: fake, plainHttpRegistries: ['local.test:5000'] });
      await client.resolve(parseImageRef('nginx:1.27'), [], signal());
      await client.resolve(parseImageRef('ghcr.io/org/app:v1'), [], signal());
      await client.resolve(parseImageRef('local.test:5000/app:v1'), [], signal());
      assert.deepEqual(urls, [
        'https://registry-1.docker.io/v2/library/nginx/manifests/1.27',
        'https://ghcr.io/v2/org/app/manifests/v1',
        'http://local.test:5000/v2/app/manifests/v1',
      ]);
    });

    it('follows a redirect, sending Authorization only to the origin it was meant for', async function () {
      const elsewhere = track(
        await startServer((_req, res) => {
          res.writeHead(200, { 'content-type': app.mediaType });
          res.end(app.bytes);
        }),
      );
      const basicRegistry = track(
        await startServer((req, res) => {
          if (req.headers.authorization !== basicAuthorization('u', 'p')) {
            res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end();
          } else if (req.url.startsWith('/v2/a/manifests/v1')) {
            res.writeHead(307, { location: '/v2/a/manifests/moved' }).end();
          } else if (req.url.startsWith('/v2/a/manifests/moved')) {
            res.writeHead(302, { location: `${elsewhere.url}/content` }).end();
          } else {
            res.writeHead(404).end();
          }
        }),
      );
      const client = clientFor([basicRegistry, elsewhere]);
      const { descriptor } = await client.getManifest(basicRegistry.host, 'a', 'v1', [{ kind: 'basic', username: 'u', password: 'p' }], signal());
      assert.equal(descriptor.digest.text, app.digest);
      assert.equal(basicRegistry.requests.at(-1)?.headers.authorization, basicAuthorization('u', 'p'), 'same origin: kept');
      assert.equal(elsewhere.requests[0]?.headers.authorization, undefined, 'other origin: dropped');
    });
  });

  describe('Bearer tokens', function () {
    let tokens: TokenServer;
    let registry: FakeRegistry;
    const app = testManifest('private');
    const alice: RegistryCredentials = { kind: 'basic', username: 'alice', password: 'alice-secret' };
    const mallory: RegistryCredentials = { kind: 'basic', username: 'mallory', password: 'guess' };

    beforeEach(async function () {
      tokens = track(await startTokenServer({ users: { alice: 'alice-secret' }, refreshTokens: ['refresh-abc'], publicRepositories: ['library/public'], expiresIn: 300 }));
      registry = track(await startFakeRegistry({ scheme: 'bearer', tokens, service: 'fake-registry' }));
      registry.put('team/app', 'v1', app);
      registry.put('library/public', 'v1', app);
      registry.put('team/other', 'v1', app);
    });

    it('answers the challenge with a token for the repository’s pull scope, Basic to the token server', async function () {
      const client = clientFor([registry, tokens]);
      const descriptor = await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      assert.equal(descriptor.digest.text, app.digest);
      const [tokenRequest] = tokens.requests;
      const url = new URL(tokenRequest?.url ?? '', tokens.url);
      assert.equal(tokenRequest?.method, 'GET');
      assert.equal(url.searchParams.get('service'), 'fake-registry');
      assert.equal(url.searchParams.get('scope'), 'repository:team/app:pull');
      assert.equal(tokenRequest?.headers.authorization, basicAuthorization('alice', 'alice-secret'));
      assert.deepEqual(
        registry.requests.map((r) => (r.headers.authorization ?? 'none').split(' ')[0]),
        ['none', 'Bearer'],
      );
    });

    it('reuses a cached token, and fetches tokens for other repositories before asking', async function () {
      const client = clientFor([registry, tokens]);
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      assert.equal(tokens.issued, 1);
      assert.equal(registry.requests.length, 3, 'one 401, then two requests with the token');
      await client.resolve(parseImageRef(`${registry.host}/team/other:v1`), [alice], signal());
      assert.equal(tokens.issued, 2);
      assert.equal(registry.requests.length, 4, 'the remembered challenge saved the 401 round trip');
    });

    it('keeps tokens per credential', async function () {
      const client = clientFor([registry, tokens]);
      const bob: RegistryCredentials = { kind: 'identity-token', token: 'refresh-abc' };
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [bob], signal());
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      assert.equal(tokens.issued, 2);
    });

    it('fetches a new token when the registry refuses a cached one', async function () {
      const client = clientFor([registry, tokens]);
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      tokens.revokeAll();
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      assert.equal(tokens.issued, 2);
    });

    it('fetches a new token once the cached one expires', async function () {
      let now = 1_000_000;
      const client = clientFor([registry, tokens], { now: () => now });
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      now += 289_000;
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      assert.equal(tokens.issued, 1);
      now += 2_000;
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      assert.equal(tokens.issued, 2, 'refreshed 10 s before expires_in');
    });

    it('pulls anonymously with a token for public repositories only', async function () {
      const client = clientFor([registry, tokens]);
      assert.equal((await client.resolve(parseImageRef(`${registry.host}/library/public:v1`), [], signal())).digest.text, app.digest);
      assert.equal(tokens.requests[0]?.headers.authorization, undefined);
      await assert.rejects(client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [], signal()), failsWith('unauthorized', 401));
    });

    it('tries each credential in order until one works', async function () {
      const client = clientFor([registry, tokens]);
      const descriptor = await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [mallory, alice], signal());
      assert.equal(descriptor.digest.text, app.digest);
      assert.deepEqual(
        tokens.requests.map((r) => r.headers.authorization),
        [basicAuthorization('mallory', 'guess'), basicAuthorization('alice', 'alice-secret')],
      );
    });

    it('is unauthorized when every credential is refused, without retrying any', async function () {
      const client = clientFor([registry, tokens]);
      await assert.rejects(
        client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [mallory, { kind: 'identity-token', token: 'wrong' }], signal()),
        (err: unknown) => failsWith('unauthorized')(err) && /credential 1 \(basic\).*credential 2 \(identity-token\)/.test((err as Error).message),
      );
      assert.equal(tokens.issued, 0);
    });

    it('does not ask again with a token it was just issued and refused', async function () {
      const client = clientFor([registry, tokens]);
      await client.resolve(parseImageRef(`${registry.host}/library/public:v1`), [], signal());
      const before = { tokens: tokens.issued, requests: registry.requests.length };
      // The challenge is known: a fresh anonymous token up front, refused, and that is the answer.
      await assert.rejects(client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [], signal()), failsWith('unauthorized', 401));
      assert.equal(tokens.issued - before.tokens, 1);
      assert.equal(registry.requests.length - before.requests, 1);
    });

    it('uses an identity token as an OAuth2 refresh token (POST grant_type=refresh_token)', async function () {
      const client = clientFor([registry, tokens]);
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [{ kind: 'identity-token', token: 'refresh-abc' }], signal());
      const [post] = tokens.requests;
      assert.equal(post?.method, 'POST');
      assert.equal(post?.headers['content-type'], 'application/x-www-form-urlencoded;charset=UTF-8');
      const form = new URLSearchParams(post?.body);
      assert.equal(form.get('grant_type'), 'refresh_token');
      assert.equal(form.get('refresh_token'), 'refresh-abc');
      assert.equal(form.get('service'), 'fake-registry');
      assert.equal(form.get('scope'), 'repository:team/app:pull');
      assert.equal(form.get('client_id'), 'shoal');
    });

    it('falls back to GET with the identity token as password where the token server has no OAuth2 POST', async function () {
      await tokens.close();
      tokens = track(await startTokenServer({ refreshTokens: ['refresh-abc'], oauthStatus: 404 }));
      registry = track(await startFakeRegistry({ scheme: 'bearer', tokens, service: 'fake-registry' }));
      registry.put('team/app', 'v1', app);
      const client = clientFor([registry, tokens]);
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [{ kind: 'identity-token', token: 'refresh-abc' }], signal());
      assert.deepEqual(
        tokens.requests.map((r) => r.method),
        ['POST', 'GET'],
      );
      assert.equal(tokens.requests[1]?.headers.authorization, basicAuthorization('', 'refresh-abc'));
    });

    it('reads access_token and defaults the lifetime when the token server sends it that way', async function () {
      await tokens.close();
      tokens = track(await startTokenServer({ users: { alice: 'alice-secret' }, field: 'access_token' }));
      registry = track(await startFakeRegistry({ scheme: 'bearer', tokens, service: 'fake-registry' }));
      registry.put('team/app', 'v1', app);
      let now = 0;
      const client = clientFor([registry, tokens], { now: () => now });
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      now += 53_000;
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      assert.equal(tokens.issued, 1);
      now += 1_001;
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      assert.equal(tokens.issued, 2, 'no expires_in: 60 s, refreshed 6 s early');
    });

    it('shares one token fetch between concurrent calls', async function () {
      const client = clientFor([registry, tokens]);
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [alice], signal());
      tokens.revokeAll();
      const refs = Array.from({ length: 5 }, () => client.resolve(parseImageRef(`${registry.host}/team/other:v1`), [alice], signal()));
      await Promise.all(refs);
      assert.equal(tokens.issued, 2);
    });

    it('refuses to send credentials to a plain-http realm of an https registry', async function () {
      const fake: typeof fetch = () => Promise.resolve(new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer realm="http://auth.example/token",service="x"' } }));
      const client = new UpstreamClient({ fetch: fake });
      await assert.rejects(client.resolve(parseImageRef('registry.example/app:v1'), [alice], signal()), (err: unknown) => failsWith('invalid')(err) && /not https/.test((err as Error).message));
    });

    it('never logs a password, token or identity token', async function () {
      const capture = captureLines();
      const logger = createLogger({ level: 'debug', write: capture.write });
      const client = clientFor([registry, tokens], { logger });
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [mallory, alice], signal());
      await client.resolve(parseImageRef(`${registry.host}/team/app:v1`), [{ kind: 'identity-token', token: 'refresh-abc' }], signal());
      await assert.rejects(client.resolve(parseImageRef(`${registry.host}/team/other:v1`), [{ kind: 'identity-token', token: 'not-the-one' }], signal()));
      const log = capture.lines.join('');
      assert.ok(capture.lines.length > 0);
      const issued = registry.requests.map((r) => r.headers.authorization?.replace(/^Bearer /, '')).filter((t): t is string => t !== undefined);
      for (const secret of ['alice-secret', 'guess', 'refresh-abc', 'not-the-one', basicAuthorization('alice', 'alice-secret').slice(6), ...issued]) {
        assert.ok(!log.includes(secret), `log holds a secret: ${secret}`);
      }
    });
  });

  describe('Basic auth', function () {
    let registry: FakeRegistry;
    const app = testManifest('basic');
    beforeEach(async function () {
      registry = track(await startFakeRegistry({ scheme: 'basic', username: 'bob', password: 'bob-pw' }));
      registry.put('app', 'v1', app);
    });

    it('answers Basic with the credential, and sends it up front once the challenge is known', async function () {
      const client = clientFor([registry]);
      const bob: RegistryCredentials = { kind: 'basic', username: 'bob', password: 'bob-pw' };
      await client.resolve(parseImageRef(`${registry.host}/app:v1`), [bob], signal());
      await client.resolve(parseImageRef(`${registry.host}/app:v1`), [bob], signal());
      assert.deepEqual(
        registry.requests.map((r) => r.headers.authorization ?? 'none'),
        ['none', basicAuthorization('bob', 'bob-pw'), basicAuthorization('bob', 'bob-pw')],
      );
    });

    it('does not send a refused password twice', async function () {
      const client = clientFor([registry]);
      const bob: RegistryCredentials = { kind: 'basic', username: 'bob', password: 'bob-pw' };
      await client.resolve(parseImageRef(`${registry.host}/app:v1`), [bob], signal());
      const before = registry.requests.length;
      await assert.rejects(client.resolve(parseImageRef(`${registry.host}/app:v1`), [{ ...bob, password: 'wrong' }], signal()), failsWith('unauthorized', 401));
      assert.equal(registry.requests.length - before, 1);
    });

    it('is unauthorized with a wrong password, an identity token or nothing', async function () {
      const client = clientFor([registry]);
      await assert.rejects(client.resolve(parseImageRef(`${registry.host}/app:v1`), [{ kind: 'basic', username: 'bob', password: 'no' }], signal()), failsWith('unauthorized', 401));
      await assert.rejects(client.resolve(parseImageRef(`${registry.host}/app:v1`), [{ kind: 'identity-token', token: 't' }], signal()), failsWith('unauthorized', 401));
      await assert.rejects(client.resolve(parseImageRef(`${registry.host}/app:v1`), [], signal()), failsWith('unauthorized', 401));
    });

    it('moves on to the next credential after a 403', async function () {
      const forbidding = track(
        await startServer((req, res) => {
          if (req.headers.authorization === basicAuthorization('good', 'pw')) {
            res.writeHead(200, { 'content-type': app.mediaType, 'docker-content-digest': app.digest, 'content-length': app.bytes.length }).end();
          } else if (req.headers.authorization !== undefined) {
            res.writeHead(403).end();
          } else {
            res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end();
          }
        }),
      );
      const client = clientFor([forbidding]);
      const creds: RegistryCredentials[] = [
        { kind: 'basic', username: 'bad', password: 'pw' },
        { kind: 'basic', username: 'good', password: 'pw' },
      ];
      assert.equal((await client.resolve(parseImageRef(`${forbidding.host}/app:v1`), creds, signal())).digest.text, app.digest);
      await assert.rejects(client.resolve(parseImageRef(`${forbidding.host}/app:v1`), creds.slice(0, 1), signal()), failsWith('unauthorized', 403));
    });
  });

  describe('failures, retries and the circuit breaker', function () {
    const app = testManifest('flaky');
    const serveApp = (res: ServerResponse) => {
      res.writeHead(200, { 'content-type': app.mediaType, 'docker-content-digest': app.digest, 'content-length': app.bytes.length });
      res.end(app.bytes);
    };

    it('retries a 5xx and succeeds when the registry recovers', async function () {
      let calls = 0;
      const flaky = track(
        await startServer((_req, res) => {
          calls++;
          if (calls <= 2) res.writeHead(calls === 1 ? 503 : 502).end();
          else serveApp(res);
        }),
      );
      const descriptor = await clientFor([flaky]).resolve(parseImageRef(`${flaky.host}/app:v1`), [], signal());
      assert.equal(descriptor.digest.text, app.digest);
      assert.equal(calls, 3);
    });

    it('is unavailable after 1 + retries attempts of 5xx', async function () {
      const down = track(await startServer((_req, res) => void res.writeHead(500).end()));
      await assert.rejects(clientFor([down], { retries: 3 }).resolve(parseImageRef(`${down.host}/app:v1`), [], signal()), failsWith('unavailable', 500));
      assert.equal(down.requests.length, 4);
    });

    for (const status of [401, 403, 404, 429, 400]) {
      it(`does not retry ${status}`, async function () {
        const server = track(
          await startServer((req, res) => {
            res.writeHead(status, status === 401 ? { 'www-authenticate': 'Basic realm="r"' } : status === 429 ? { 'retry-after': '30' } : {});
            res.end();
          }),
        );
        const want: UpstreamFailure = status === 404 ? 'not-found' : status === 429 ? 'rate-limited' : status === 400 ? 'invalid' : 'unauthorized';
        await assert.rejects(clientFor([server]).getManifest(server.host, 'app', 'v1', [], signal()), failsWith(want, status));
        assert.equal(server.requests.length, 1);
      });
    }

    it('says rate-limited with the Retry-After it was given', async function () {
      const limited = track(await startServer((_req, res) => void res.writeHead(429, { 'retry-after': '17' }).end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')));
      await assert.rejects(
        clientFor([limited]).getManifest(limited.host, 'app', 'v1', [], signal()),
        (err: unknown) => failsWith('rate-limited', 429)(err) && /TOOMANYREQUESTS: slow down.*retry after 17/.test((err as Error).message),
      );
    });

    it('times out a registry that does not answer, per attempt', async function () {
      const silent = track(await startServer(() => {}));
      const started = Date.now();
      await assert.rejects(
        clientFor([silent], { requestTimeoutMs: 100, retries: 1 }).resolve(parseImageRef(`${silent.host}/app:v1`), [], signal()),
        (err: unknown) => failsWith('unavailable')(err) && /no complete answer within 100 ms/.test((err as Error).message),
      );
      const elapsed = Date.now() - started;
      assert.equal(silent.requests.length, 2);
      assert.ok(elapsed >= 200 && elapsed < 2000, `took ${elapsed} ms`);
    });

    it('times out a body that stops half-way', async function () {
      const stalling = track(
        await startServer((_req, res) => {
          res.writeHead(200, { 'content-type': app.mediaType, 'content-length': app.bytes.length });
          res.write(app.bytes.subarray(0, 10));
        }),
      );
      await assert.rejects(clientFor([stalling], { requestTimeoutMs: 100, retries: 0 }).getManifest(stalling.host, 'app', 'v1', [], signal()), failsWith('unavailable'));
    });

    it('gives up at once with the caller’s reason when the caller’s signal fires, and does not blame the registry', async function () {
      const silent = track(await startServer(() => {}));
      const client = clientFor([silent], { requestTimeoutMs: 5000, circuitFailureThreshold: 1 });
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('admission budget spent')), 50);
      const started = Date.now();
      await assert.rejects(client.resolve(parseImageRef(`${silent.host}/app:v1`), [], controller.signal), /admission budget spent/);
      assert.ok(Date.now() - started < 1000);
      assert.equal(client.circuitState(silent.host), 'closed');
    });

    it('is unavailable when nothing listens, then opens the circuit and fails fast without connecting', async function () {
      const gone = track(await startServer(() => {}));
      await gone.close();
      const capture = captureLines();
      const client = clientFor([gone], { retries: 1, circuitFailureThreshold: 2, circuitCooldownMs: 60_000, logger: createLogger({ write: capture.write }) });
      const ref = parseImageRef(`${gone.host}/app:v1`);
      await assert.rejects(client.resolve(ref, [], signal()), (err: unknown) => failsWith('unavailable')(err) && /ECONNREFUSED/.test((err as Error).message));
      assert.equal(client.circuitState(gone.host), 'closed');
      await assert.rejects(client.resolve(ref, [], signal()), failsWith('unavailable'));
      assert.equal(client.circuitState(gone.host), 'open');
      const started = Date.now();
      await assert.rejects(client.resolve(ref, [], signal()), failsWith('circuit-open'));
      assert.ok(Date.now() - started < 50);
      assert.match(capture.lines.join(''), /"level":"warn","msg":"upstream failing: circuit open, calls fail fast".*"registry":"127\.0\.0\.1:\d+"/);
      // Other registries are not affected.
      assert.equal(client.circuitState('elsewhere.example'), 'closed');
    });

    it('lets a probe through after the cooldown and closes the circuit when the registry is back', async function () {
      let up = false;
      const server = track(await startServer((_req, res) => (up ? serveApp(res) : void res.writeHead(503).end())));
      let now = 0;
      const client = clientFor([server], { retries: 0, circuitFailureThreshold: 1, circuitCooldownMs: 10_000, now: () => now });
      const ref = parseImageRef(`${server.host}/app:v1`);
      await assert.rejects(client.resolve(ref, [], signal()), failsWith('unavailable', 503));
      await assert.rejects(client.resolve(ref, [], signal()), failsWith('circuit-open'));
      assert.equal(server.requests.length, 1);
      up = true;
      now += 10_000;
      assert.equal((await client.resolve(ref, [], signal())).digest.text, app.digest);
      assert.equal(client.circuitState(server.host), 'closed');
    });

    it('does not count answers (404, 401, invalid) against the registry', async function () {
      const registry = track(await startFakeRegistry());
      const client = clientFor([registry], { circuitFailureThreshold: 1 });
      for (let i = 0; i < 3; i++) await assert.rejects(client.resolve(parseImageRef(`${registry.host}/app:missing`), [], signal()), failsWith('not-found'));
      assert.equal(client.circuitState(registry.host), 'closed');
    });
  });
});
