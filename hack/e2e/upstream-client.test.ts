/**
 * The upstream distribution client against the real CNCF registry: anonymous,
 * htpasswd Basic auth, and `auth.token` Bearer auth with a token server written
 * here (ES256 JWTs whose x5c certificate is the registry's rootcertbundle, so
 * the registry really checks signature, issuer, audience, expiry and access).
 * Then the registry goes away: unavailable after retries, then the circuit
 * opens and calls fail fast; back up, a probe closes it again.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, randomUUID, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseImageRef } from '../../shared/image-ref.ts';
import { createLogger } from '../../shared/log.ts';
import { MEDIA_TYPES } from '../../shared/media-types.ts';
import { UpstreamClient, type UpstreamClientInit } from '../../shared/distribution/client.ts';
import type { RegistryCredentials } from '../../shared/distribution/types.ts';
import { buildAndPush, buildImage, pushImage, type PushedImage } from '../harness/images.ts';
import { run, stopAll } from '../harness/procs.ts';
import { startRegistry, type Registry } from '../harness/registry.ts';
import { createRunDir } from '../harness/runs.ts';
import { failsWith } from '../../shared/distribution/testing.ts';

const signal = () => AbortSignal.timeout(30_000);

const SERVICE = 'shoal-e2e-registry';
const ISSUER = 'shoal-e2e-token-issuer';
const ALICE = { user: 'alice', password: 'alice-e2e-secret' };
const IDENTITY_TOKEN = 'e2e-refresh-token';

describe('upstream client against the real registry', function () {
  this.timeout(120_000);
  let runDir: string;
  let open: Registry | undefined;
  let basic: Registry | undefined;
  let tokenRegistry: Registry | undefined;
  let issuer: TokenIssuer | undefined;
  let single: PushedImage;
  let multi: PushedImage;
  let basicImage: PushedImage;
  let privateImage: PushedImage;
  let publicImage: PushedImage;

  const client = (registries: readonly (Registry | undefined)[], init: UpstreamClientInit = {}) =>
    new UpstreamClient({ plainHttpRegistries: registries.map((r) => r!.host), requestTimeoutMs: 5000, ...init });

  before(async function () {
    runDir = await createRunDir();
    open = await startRegistry({ dir: join(runDir, 'open') });
    basic = await startRegistry({ dir: join(runDir, 'basic'), htpasswd: ALICE });
    issuer = await startTokenIssuer(join(runDir, 'issuer'));
    tokenRegistry = await startRegistry({ dir: join(runDir, 'token'), token: { realm: `${issuer.url}/token`, service: SERVICE, issuer: ISSUER, rootCertBundle: issuer.certPath } });

    single = await buildAndPush({ dir: join(runDir, 'img-single'), layers: [4096], registry: open.host, repo: 'test/single', tag: 'v1' });
    multi = await buildAndPush({
      dir: join(runDir, 'img-multi'),
      layers: [4096],
      platforms: [
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 'arm64' },
      ],
      registry: open.host,
      repo: 'test/multi',
      tag: 'v1',
    });
    basicImage = await buildAndPush({ dir: join(runDir, 'img-basic'), layers: [4096], registry: basic.host, repo: 'test/private', tag: 'v1', credentials: ALICE });
    const layout = await buildImage({ dir: join(runDir, 'img-token'), layers: [4096] });
    privateImage = await pushImage(layout, { registry: tokenRegistry.host, repo: 'private/app', tag: 'v1', credentials: ALICE });
    publicImage = await pushImage(layout, { registry: tokenRegistry.host, repo: 'public/app', tag: 'v1', credentials: ALICE });
  });

  after(async function () {
    await stopAll(open, basic, tokenRegistry, issuer);
  });

  describe('anonymous', function () {
    it('resolves an OCI manifest with a single HEAD', async function () {
      const before = open!.requests().length;
      const descriptor = await client([open]).resolve(parseImageRef(single.ref), [], signal());
      assert.deepEqual(
        { digest: descriptor.digest.text, mediaType: descriptor.mediaType, size: descriptor.size },
        { digest: single.digest, mediaType: MEDIA_TYPES.ociManifest, size: single.size },
      );
      const seen = await open!.requestsSince(before, 1);
      assert.deepEqual(
        seen.map((r) => `${r.method} ${r.path} ${r.status}`),
        [`HEAD /v2/test/single/manifests/v1 200`],
      );
      assert.equal(seen[0]?.userAgent, 'shoal');
    });

    it('resolves a multi-arch image to its index digest', async function () {
      const descriptor = await client([open]).resolve(parseImageRef(multi.ref), [], signal());
      assert.equal(descriptor.digest.text, multi.digest);
      assert.equal(descriptor.mediaType, MEDIA_TYPES.ociIndex);
      assert.equal(descriptor.size, multi.size);
    });

    it('gets the index’s exact bytes by tag and by digest', async function () {
      const c = client([open]);
      const byTag = await c.getManifest(open!.host, 'test/multi', 'v1', [], signal());
      assert.ok(byTag.bytes.equals(multi.bytes(multi.digest)));
      const byDigest = await c.getManifest(open!.host, 'test/multi', byTag.descriptor.digest, [], signal());
      assert.ok(byDigest.bytes.equals(byTag.bytes));
      assert.equal(byDigest.descriptor.digest.text, multi.digest);
    });

    it('says not-found for a tag or repository that does not exist', async function () {
      const c = client([open]);
      await assert.rejects(c.resolve(parseImageRef(`${open!.host}/test/single:no-such-tag`), [], signal()), failsWith('not-found', 404));
      await assert.rejects(c.resolve(parseImageRef(`${open!.host}/no/such-repo:v1`), [], signal()), failsWith('not-found', 404));
      await assert.rejects(c.getManifest(open!.host, 'test/single', 'no-such-tag', [], signal()), (err: unknown) => failsWith('not-found')(err) && /MANIFEST_UNKNOWN/.test((err as Error).message));
    });
  });

  describe('htpasswd (Basic)', function () {
    const right: RegistryCredentials = { kind: 'basic', username: ALICE.user, password: ALICE.password };
    const wrong: RegistryCredentials = { kind: 'basic', username: ALICE.user, password: 'not-it' };

    it('resolves with the right credentials, also after a wrong one', async function () {
      const c = client([basic]);
      assert.equal((await c.resolve(parseImageRef(basicImage.ref), [right], signal())).digest.text, basicImage.digest);
      assert.equal((await client([basic]).resolve(parseImageRef(basicImage.ref), [wrong, right], signal())).digest.text, basicImage.digest);
    });

    it('is unauthorized with wrong credentials or none', async function () {
      await assert.rejects(client([basic]).resolve(parseImageRef(basicImage.ref), [wrong], signal()), failsWith('unauthorized', 401));
      await assert.rejects(client([basic]).resolve(parseImageRef(basicImage.ref), [], signal()), failsWith('unauthorized', 401));
    });
  });

  describe('token auth (Bearer)', function () {
    it('is really checked by the registry: a token signed by another key is refused', async function () {
      const forged = issuer!.mint({ key: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, access: [{ type: 'repository', name: 'private/app', actions: ['pull'] }] });
      const res = await fetch(`${tokenRegistry!.url}/v2/private/app/manifests/v1`, { method: 'HEAD', headers: { authorization: `Bearer ${forged}`, accept: MEDIA_TYPES.ociManifest } });
      assert.equal(res.status, 401);
      const genuine = issuer!.mint({ access: [{ type: 'repository', name: 'private/app', actions: ['pull'] }] });
      const ok = await fetch(`${tokenRegistry!.url}/v2/private/app/manifests/v1`, { method: 'HEAD', headers: { authorization: `Bearer ${genuine}`, accept: MEDIA_TYPES.ociManifest } });
      assert.equal(ok.status, 200);
    });

    it('resolves a public repository anonymously with an anonymous token', async function () {
      issuer!.requests.length = 0;
      const descriptor = await client([tokenRegistry]).resolve(parseImageRef(publicImage.ref), [], signal());
      assert.equal(descriptor.digest.text, publicImage.digest);
      assert.deepEqual(issuer!.requests, [{ method: 'GET', who: 'anonymous', scopes: ['repository:public/app:pull'], service: SERVICE }]);
    });

    it('is unauthorized anonymously for a private repository (the token grants no access)', async function () {
      await assert.rejects(client([tokenRegistry]).resolve(parseImageRef(privateImage.ref), [], signal()), failsWith('unauthorized', 401));
    });

    it('resolves a private repository with Basic credentials at the token server, and caches the token', async function () {
      issuer!.requests.length = 0;
      const c = client([tokenRegistry]);
      const alice: RegistryCredentials = { kind: 'basic', username: ALICE.user, password: ALICE.password };
      const before = tokenRegistry!.requests().length;
      assert.equal((await c.resolve(parseImageRef(privateImage.ref), [alice], signal())).digest.text, privateImage.digest);
      assert.equal((await c.resolve(parseImageRef(privateImage.ref), [alice], signal())).digest.text, privateImage.digest);
      assert.deepEqual(issuer!.requests, [{ method: 'GET', who: 'alice', scopes: ['repository:private/app:pull'], service: SERVICE }]);
      assert.deepEqual(
        (await tokenRegistry!.requestsSince(before, 3)).map((r) => `${r.method} ${r.status}`),
        ['HEAD 401', 'HEAD 200', 'HEAD 200'],
      );
    });

    it('is unauthorized with a wrong password, and tries the next credential', async function () {
      const wrong: RegistryCredentials = { kind: 'basic', username: ALICE.user, password: 'nope' };
      const right: RegistryCredentials = { kind: 'basic', username: ALICE.user, password: ALICE.password };
      await assert.rejects(client([tokenRegistry]).resolve(parseImageRef(privateImage.ref), [wrong], signal()), failsWith('unauthorized', 401));
      assert.equal((await client([tokenRegistry]).resolve(parseImageRef(privateImage.ref), [wrong, right], signal())).digest.text, privateImage.digest);
    });

    it('uses an identity token as an OAuth2 refresh token', async function () {
      issuer!.requests.length = 0;
      const descriptor = await client([tokenRegistry]).resolve(parseImageRef(privateImage.ref), [{ kind: 'identity-token', token: IDENTITY_TOKEN }], signal());
      assert.equal(descriptor.digest.text, privateImage.digest);
      assert.deepEqual(issuer!.requests, [{ method: 'POST', who: 'refresh-token', scopes: ['repository:private/app:pull'], service: SERVICE }]);
    });
  });

  describe('an upstream that goes away', function () {
    let flaky: Registry | undefined;
    let image: PushedImage;
    before(async function () {
      flaky = await startRegistry({ dir: join(runDir, 'flaky') });
      image = await buildAndPush({ dir: join(runDir, 'img-flaky'), layers: [4096], registry: flaky.host, repo: 'test/flaky', tag: 'v1' });
    });
    after(async function () {
      await stopAll(flaky);
    });

    it('is unavailable after retries, then fails fast with the circuit open, and recovers through a probe', async function () {
      const lines: string[] = [];
      const requestTimeoutMs = 2000;
      const c = client([flaky], {
        requestTimeoutMs,
        retries: 2,
        retryBaseDelayMs: 50,
        circuitFailureThreshold: 2,
        circuitCooldownMs: 1500,
        logger: createLogger({ level: 'debug', write: (line) => lines.push(line) }),
      });
      const ref = parseImageRef(image.ref);
      assert.equal((await c.resolve(ref, [], signal())).digest.text, image.digest);

      await flaky!.stop();
      for (let i = 0; i < 2; i++) {
        await assert.rejects(c.resolve(ref, [], signal()), (err: unknown) => failsWith('unavailable')(err) && /ECONNREFUSED/.test((err as Error).message));
      }
      assert.equal(lines.filter((l) => l.includes('"msg":"retrying upstream request"')).length, 4, 'two retries for each of the two calls');
      assert.equal(c.circuitState(flaky!.host), 'open');

      const started = performance.now();
      await assert.rejects(c.resolve(ref, [], signal()), failsWith('circuit-open'));
      const elapsed = performance.now() - started;
      assert.ok(elapsed < requestTimeoutMs / 10, `an open circuit answered in ${elapsed.toFixed(1)} ms`);

      await flaky!.start();
      await sleep(1500);
      assert.equal(c.circuitState(flaky!.host), 'half-open');
      assert.equal((await c.resolve(ref, [], signal())).digest.text, image.digest);
      assert.equal(c.circuitState(flaky!.host), 'closed');
    });
  });
});

// --- A Docker token server for distribution's auth.token -------------------------------

interface Access {
  type: string;
  name: string;
  actions: string[];
}

interface IssuerRequest {
  method: string;
  /** `anonymous`, a user name, or `refresh-token`. */
  who: string;
  scopes: string[];
  service: string;
}

interface TokenIssuer {
  readonly url: string;
  readonly certPath: string;
  /** Token requests granted or refused, oldest first (clear with `length = 0`). */
  readonly requests: IssuerRequest[];
  /** A JWT for the registry, signed with the issuer's key unless another is given. */
  mint(opts: { access: Access[]; key?: KeyObject }): string;
  stop(): Promise<void>;
}

/**
 * Grants: alice (Basic) and the identity token (OAuth2 POST, grant_type=refresh_token)
 * everything asked; anyone `pull` on `public/*`. Wrong credentials: 401.
 */
async function startTokenIssuer(dir: string): Promise<TokenIssuer> {
  mkdirSync(dir, { recursive: true });
  const keyPath = join(dir, 'issuer.key');
  const certPath = join(dir, 'issuer.crt');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=shoal-e2e-token-issuer', '-keyout', keyPath, '-out', certPath]);
  const issuerKey = createPrivateKey(readFileSync(keyPath));
  const certDer = new X509Certificate(readFileSync(certPath)).raw.toString('base64');
  const requests: IssuerRequest[] = [];

  const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');
  const mint = ({ access, key = issuerKey }: { access: Access[]; key?: KeyObject }): string => {
    const now = Math.floor(Date.now() / 1000);
    // libtrust (distribution 2.8) finds the signing key through the x5c chain, which must end at rootcertbundle.
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer] };
    const claims = { iss: ISSUER, sub: 'shoal-e2e', aud: SERVICE, exp: now + 300, nbf: now - 5, iat: now, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    // JWS ES256 signatures are r||s, not DER.
    const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    return `${input}.${b64url(signature)}`;
  };

  const parseScope = (scope: string): Access | undefined => {
    const first = scope.indexOf(':');
    const last = scope.lastIndexOf(':');
    if (first === -1 || last === first) return undefined;
    return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions: scope.slice(last + 1).split(',') };
  };

  const readBody = (req: IncomingMessage) =>
    new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });

  const server: Server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://issuer');
      if (url.pathname !== '/token') return void res.writeHead(404).end();
      let params: URLSearchParams;
      let who: string | undefined;
      if (req.method === 'POST') {
        params = new URLSearchParams(await readBody(req));
        who = params.get('grant_type') === 'refresh_token' && params.get('refresh_token') === IDENTITY_TOKEN ? 'refresh-token' : undefined;
      } else {
        params = url.searchParams;
        const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '')?.[1];
        if (basic === undefined) {
          who = 'anonymous';
        } else {
          const text = Buffer.from(basic, 'base64').toString('utf8');
          const colon = text.indexOf(':');
          who = text.slice(0, colon) === ALICE.user && text.slice(colon + 1) === ALICE.password ? ALICE.user : undefined;
        }
      }
      // skopeo asks with several scope parameters; the OAuth2 form puts them space-separated in one.
      const scopes = params.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
      requests.push({ method: req.method ?? '', who: who ?? 'refused', scopes, service: params.get('service') ?? '' });
      if (who === undefined) return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"incorrect credentials"}');
      const access = scopes
        .map(parseScope)
        .filter((a): a is Access => a !== undefined)
        .map((a) => ({ ...a, actions: who === 'anonymous' ? (a.name.startsWith('public/') ? a.actions.filter((x) => x === 'pull') : []) : a.actions }))
        .filter((a) => a.actions.length > 0);
      const token = mint({ access });
      const body = req.method === 'POST' ? { access_token: token, expires_in: 300, scope: scopes.join(' ') } : { token, expires_in: 300, issued_at: new Date().toISOString() };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    certPath,
    requests,
    mint,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
