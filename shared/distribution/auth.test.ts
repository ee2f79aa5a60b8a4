import assert from 'node:assert/strict';
import { parseImageRef } from '../image-ref.ts';
import { parseTokenResponse } from './auth.ts';
import { UpstreamClient } from './client.ts';
import { startServer, testManifest, type TestServer, failsWith } from './testing.ts';

const realm = new URL('https://auth.example/token');
const parse = (body: unknown) => parseTokenResponse('r.example', realm, Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)));

describe('token responses', function () {
  it('reads token or access_token (token first when both come) and expires_in', function () {
    assert.deepEqual(parse({ token: 'a', expires_in: 300 }), { token: 'a', expiresIn: 300 });
    assert.deepEqual(parse({ access_token: 'b' }), { token: 'b', expiresIn: undefined });
    assert.deepEqual(parse({ token: 'a', access_token: 'b', expires_in: '120', issued_at: '2026-11-22T00:00:00Z' }), { token: 'a', expiresIn: 120 });
    assert.deepEqual(parse({ token: '', access_token: 'b' }), { token: 'b', expiresIn: undefined });
  });

  it('calls an answer without a token, or not JSON, invalid', function () {
    assert.throws(() => parse({ expires_in: 60 }), failsWith('invalid'));
    assert.throws(() => parse({ token: 5 }), failsWith('invalid'));
    assert.throws(() => parse('<html>'), failsWith('invalid'));
    assert.throws(() => parse('null'), failsWith('invalid'));
  });
});

describe('token server failures', function () {
  let tokenServer: TestServer | undefined;
  let registry: TestServer | undefined;
  afterEach(async function () {
    await Promise.all([tokenServer?.close(), registry?.close()]);
  });

  /** A registry asking for Bearer tokens from a token server answering `status`. */
  async function setUp(status: number): Promise<UpstreamClient> {
    tokenServer = await startServer((_req, res) => void res.writeHead(status, { 'content-type': 'application/json' }).end('{}'));
    const realmUrl = `${tokenServer.url}/token`;
    registry = await startServer((_req, res) => void res.writeHead(401, { 'www-authenticate': `Bearer realm="${realmUrl}",service="s"` }).end());
    return new UpstreamClient({ plainHttpRegistries: [registry.host], retries: 2, retryBaseDelayMs: 1, requestTimeoutMs: 1000 });
  }

  it('retries a token server’s 5xx, then is unavailable', async function () {
    const client = await setUp(503);
    await assert.rejects(client.resolve(parseImageRef(`${registry!.host}/app:v1`), [], AbortSignal.timeout(5000)), failsWith('unavailable', 503));
    assert.equal(tokenServer!.requests.length, 3);
  });

  it('is rate-limited by a token server’s 429, without retrying', async function () {
    const client = await setUp(429);
    await assert.rejects(client.resolve(parseImageRef(`${registry!.host}/app:v1`), [], AbortSignal.timeout(5000)), failsWith('rate-limited', 429));
    assert.equal(tokenServer!.requests.length, 1);
  });

  it('calls a token endpoint that is not there invalid', async function () {
    const client = await setUp(404);
    await assert.rejects(client.resolve(parseImageRef(`${registry!.host}/app:v1`), [], AbortSignal.timeout(5000)), failsWith('invalid', 404));
  });

  it('moves to the next credential when the token server refuses one', async function () {
    const app = testManifest('t');
    tokenServer = await startServer((req, res) => {
      if (req.headers.authorization === `Basic ${Buffer.from('ok:ok').toString('base64')}`) res.writeHead(200).end('{"token":"granted"}');
      else res.writeHead(403).end();
    });
    const realmUrl = `${tokenServer.url}/token`;
    registry = await startServer((req, res) => {
      if (req.headers.authorization === 'Bearer granted') {
        res.writeHead(200, { 'content-type': app.mediaType, 'docker-content-digest': app.digest, 'content-length': app.bytes.length }).end();
      } else {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="${realmUrl}",service="s"` }).end();
      }
    });
    const client = new UpstreamClient({ plainHttpRegistries: [registry.host] });
    const descriptor = await client.resolve(
      parseImageRef(`${registry.host}/app:v1`),
      [
        { kind: 'basic', username: 'no', password: 'no' },
        { kind: 'basic', username: 'ok', password: 'ok' },
      ],
      AbortSignal.timeout(5000),
    );
    assert.equal(descriptor.digest.text, app.digest);
  });
});
