/**
 * Small real HTTP servers for the client's tests, speaking the distribution
 * protocol: a registry holding manifests (with Bearer or Basic auth, and knobs
 * for the ways registries misbehave) and a Docker token server.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { digestOf } from '../digest.ts';
import { MEDIA_TYPES } from '../media-types.ts';
import { basicAuthorization } from './auth.ts';
import { UpstreamError, type UpstreamFailure } from './types.ts';

export interface SeenRequest {
  readonly method: string;
  /** Path and query as sent. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export type Handler = (req: SeenRequest, res: ServerResponse) => void | Promise<void>;

export interface TestServer {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `127.0.0.1:PORT` */
  readonly host: string;
  /** Every request so far, oldest first. */
  readonly requests: SeenRequest[];
  close(): Promise<void>;
}

export async function startServer(handler: Handler): Promise<TestServer> {
  const requests: SeenRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const seen: SeenRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      requests.push(seen);
      Promise.resolve(handler(seen, res)).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500);
        res.end(String(err));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Registers the test servers a suite starts: track(server) returns it, and
 * every server tracked is closed after each test. Call inside a describe().
 */
export function closedAfterEach(): <T extends TestServer>(server: T) => T {
  const servers: TestServer[] = [];
  afterEach(async function () {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  return (server) => {
    servers.push(server);
    return server;
  };
}

export interface TestManifest {
  readonly bytes: Buffer;
  readonly mediaType: string;
  readonly digest: string;
}

/** An image manifest with odd spacing, so re-serialising it would change its digest. */
export function testManifest(seed = randomBytes(4).toString('hex'), mediaType: string = MEDIA_TYPES.ociManifest): TestManifest {
  const blob = (s: string) => ({ mediaType: 'application/octet-stream', digest: digestOf(Buffer.from(s)).text, size: s.length });
  const doc = { schemaVersion: 2, mediaType, config: blob(`config ${seed}`), layers: [blob(`layer ${seed}`)] };
  const bytes = Buffer.from(JSON.stringify(doc, null, 3) + '\n\n');
  return { bytes, mediaType, digest: digestOf(bytes).text };
}

export function testIndex(manifests: readonly TestManifest[]): TestManifest {
  const doc = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociIndex,
    manifests: manifests.map((m, i) => ({ mediaType: m.mediaType, digest: m.digest, size: m.bytes.length, platform: { os: 'linux', architecture: i === 0 ? 'amd64' : 'arm64' } })),
  };
  const bytes = Buffer.from(JSON.stringify(doc));
  return { bytes, mediaType: MEDIA_TYPES.ociIndex, digest: digestOf(bytes).text };
}

export type RegistryAuth =
  | { readonly scheme: 'basic'; readonly username: string; readonly password: string }
  /** Accepts tokens the token server issued for `repository:<repo>:pull`. */
  | { readonly scheme: 'bearer'; readonly tokens: TokenServer; readonly service: string };

/** How the fake registry misbehaves; change fields between requests. */
export interface FakeRegistryKnobs {
  /** Leave Docker-Content-Digest out. */
  omitDigest?: boolean;
  /** Send this Docker-Content-Digest instead of the right one. */
  lyingDigest?: string;
  /** Answer HEAD with this status instead of serving it (e.g. 405). */
  headStatus?: number;
  /** Content-Type to send instead of the manifest's. */
  contentType?: string;
}

export interface FakeRegistry extends TestServer {
  put(repository: string, tag: string, manifest: TestManifest): void;
  readonly knobs: FakeRegistryKnobs;
  /** Requests for manifests only. */
  manifestRequests(): SeenRequest[];
}

export async function startFakeRegistry(auth?: RegistryAuth): Promise<FakeRegistry> {
  const store = new Map<string, TestManifest>();
  const knobs: FakeRegistryKnobs = {};
  const server = await startServer((req, res) => {
    const m = /^\/v2\/(.+)\/manifests\/([^/?]+)$/.exec(req.url.split('?')[0] ?? '');
    if (!m) {
      res.writeHead(404).end();
      return;
    }
    const [, repository = '', reference = ''] = m;
    if (auth !== undefined && !authorized(auth, req.headers.authorization, repository)) {
      const challenge =
        auth.scheme === 'basic'
          ? 'Basic realm="fake-registry"'
          : `Bearer realm="${auth.tokens.url}/token",service="${auth.service}",scope="repository:${repository}:pull"`;
      res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
      return;
    }
    const manifest = store.get(`${repository}@${reference}`) ?? store.get(`${repository}:${reference}`);
    if (manifest === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
      return;
    }
    if (req.method === 'HEAD' && knobs.headStatus !== undefined) {
      res.writeHead(knobs.headStatus).end();
      return;
    }
    const headers: Record<string, string | number> = { 'content-type': knobs.contentType ?? manifest.mediaType, 'content-length': manifest.bytes.length };
    if (!knobs.omitDigest) headers['docker-content-digest'] = knobs.lyingDigest ?? manifest.digest;
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : manifest.bytes);
  });
  return {
    ...server,
    knobs,
    put(repository, tag, manifest) {
      store.set(`${repository}:${tag}`, manifest);
      store.set(`${repository}@${manifest.digest}`, manifest);
    },
    manifestRequests: () => server.requests.filter((r) => r.url.includes('/manifests/')),
  };
}

function authorized(auth: RegistryAuth, header: string | undefined, repository: string): boolean {
  if (header === undefined) return false;
  if (auth.scheme === 'basic') return header === basicAuthorization(auth.username, auth.password);
  const token = /^Bearer (.+)$/.exec(header)?.[1];
  return token !== undefined && auth.tokens.grants(token, `repository:${repository}:pull`, auth.service);
}

export interface TokenServerInit {
  /** user → password that may pull everything. */
  users?: Readonly<Record<string, string>>;
  /** Refresh tokens (identity tokens) that may pull everything. */
  refreshTokens?: readonly string[];
  /** Repositories anyone may pull anonymously. */
  publicRepositories?: readonly string[];
  /** Which field carries the token. Default `token`. */
  field?: 'token' | 'access_token' | 'both';
  /** expires_in to send; undefined: none. */
  expiresIn?: number;
  /** Whether POST (OAuth2) is served; otherwise it answers this status. Default: served. */
  oauthStatus?: number;
}

export interface TokenServer extends TestServer {
  grants(token: string, scope: string, service: string): boolean;
  /** Tokens issued so far. */
  readonly issued: number;
  /** Invalidates every issued token (as if they expired early). */
  revokeAll(): void;
}

/** A Docker token server: GET with Basic (or anonymous) and OAuth2 POST with a refresh token. */
export async function startTokenServer(init: TokenServerInit = {}): Promise<TokenServer> {
  const granted = new Map<string, { scope: string; service: string }>();
  let issued = 0;
  const server = await startServer((req, res) => {
    const url = new URL(req.url, 'http://token');
    if (url.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    let params: URLSearchParams;
    let allowed: boolean;
    if (req.method === 'POST') {
      if (init.oauthStatus !== undefined) {
        res.writeHead(init.oauthStatus).end();
        return;
      }
      params = new URLSearchParams(req.body);
      allowed = params.get('grant_type') === 'refresh_token' && (init.refreshTokens ?? []).includes(params.get('refresh_token') ?? '');
    } else {
      params = url.searchParams;
      const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (basic !== undefined) {
        const text = Buffer.from(basic, 'base64').toString('utf8');
        const colon = text.indexOf(':');
        const [user, password] = [text.slice(0, colon), text.slice(colon + 1)];
        allowed = (user !== '' && init.users?.[user] === password) || (user === '' && (init.refreshTokens ?? []).includes(password));
      } else {
        // Anonymous: a token always, as Docker Hub does; it grants nothing beyond public repositories.
        allowed = true;
        const repo = /^repository:(.+):pull$/.exec(params.get('scope') ?? '')?.[1];
        if (repo === undefined || !(init.publicRepositories ?? []).includes(repo)) params = new URLSearchParams({ service: params.get('service') ?? '' });
      }
    }
    if (!allowed) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"incorrect username or password"}');
      return;
    }
    const token = randomBytes(16).toString('hex');
    issued++;
    granted.set(token, { scope: params.get('scope') ?? '', service: params.get('service') ?? '' });
    const field = init.field ?? 'token';
    const body: Record<string, unknown> = {};
    if (field === 'token' || field === 'both') body.token = token;
    if (field === 'access_token' || field === 'both') body.access_token = token;
    if (init.expiresIn !== undefined) body.expires_in = init.expiresIn;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  return {
    ...server,
    grants: (token, scope, service) => {
      const g = granted.get(token);
      return g !== undefined && g.scope === scope && g.service === service;
    },
    get issued() {
      return issued;
    },
    revokeAll: () => granted.clear(),
  };
}

/** A logger's lines, for asserting what was (not) logged. */
export function captureLines(): { lines: string[]; write: (line: string) => void } {
  const lines: string[] = [];
  return { lines, write: (line) => lines.push(line) };
}

/** An assert.rejects validator: an UpstreamError of this failure (and status, and message, when given). */
export function failsWith(failure: UpstreamFailure, status?: number, message?: RegExp): (err: unknown) => true {
  return (err) => {
    assert.ok(err instanceof UpstreamError, `want UpstreamError, got ${String(err)}`);
    assert.equal(err.failure, failure, err.message);
    if (status !== undefined) assert.equal(err.status, status, err.message);
    if (message !== undefined) assert.match(err.message, message);
    return true;
  };
}
