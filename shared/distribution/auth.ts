/**
 * Answers registry challenges (the Docker token spec and RFC 7617 Basic).
 *
 * Bearer: a token from the challenge's realm for `service` and the scope
 * `repository:<repo>:pull`, read from `token` or `access_token`, cached per
 * (registry, realm, service, scope, credential) until shortly before
 * `expires_in` (60 s when absent).
 *  - no credential: GET realm anonymously;
 *  - basic: GET realm with Basic user:password (every token server supports it);
 *  - identity token: it is an OAuth2 refresh token (what `docker login` stores
 *    as `identitytoken`): POST realm with grant_type=refresh_token, service,
 *    scope, client_id. Token servers without the OAuth2 endpoint answer
 *    400/401/404/405 (GCR 404, Artifactory 401, ACR 400 in containerd's notes):
 *    then GET realm with Basic `:<token>`, as containerd does.
 * Basic: the credential's user:password on the request itself; an identity
 * token cannot answer a Basic challenge.
 *
 * The registry's last challenge is remembered, so later requests (other
 * repositories too) get their token before asking and skip the 401 round trip.
 * Secrets never reach a log line or an error message.
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../log.ts';
import { parseChallenges, type Challenge } from './challenge.ts';
import type { BufferedResponse, Exchanger } from './exchange.ts';
import type { HttpRequest } from './transport.ts';
import { TokenCache } from './token-cache.ts';
import { UpstreamError, type RegistryCredentials } from './types.ts';

/** A credential to try; undefined: anonymous. */
export type Credential = RegistryCredentials | undefined;

export interface AuthenticatorInit {
  exchanger: Pick<Exchanger, 'buffered'>;
  /** Registries spoken to over plain http: only their token realms may be http too. */
  isPlainHttp: (registry: string) => boolean;
  logger: Logger;
  tokenCache?: TokenCache;
  /** Sent as client_id to token servers, for their audit logs. Default `shoal`. */
  clientId?: string;
  /** Headers for token requests (User-Agent). */
  headers?: Readonly<Record<string, string>>;
}

/** Token responses are small JSON; a larger answer is not one. */
const MAX_TOKEN_RESPONSE_BYTES = 1 << 20;
/** OAuth2 POST answers after which the plain GET is tried. */
const OAUTH_FALLBACK_STATUSES = new Set([400, 401, 404, 405]);

/** The pull scope for one repository. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

/** The challenge a registry's 401 asks us to answer: Bearer with a realm first, then Basic. */
export function chooseChallenge(header: string | null): Challenge | undefined {
  if (header === null) return undefined;
  const challenges = parseChallenges(header);
  return challenges.find((c) => c.scheme === 'bearer' && c.params.realm) ?? challenges.find((c) => c.scheme === 'basic');
}

/** An Authorization to send; `fresh`: not from the cache (Basic, or a token just issued). */
export interface Prepared {
  readonly authorization: string;
  readonly fresh: boolean;
}

/** Same scheme, realm and service: `scope` and `error` vary from request to request. */
function sameChallenge(a: Challenge, b: Challenge): boolean {
  return a.scheme === b.scheme && a.params.realm === b.params.realm && a.params.service === b.params.service;
}

export class Authenticator {
  readonly #exchanger: Pick<Exchanger, 'buffered'>;
  readonly #isPlainHttp: (registry: string) => boolean;
  readonly #logger: Logger;
  readonly #tokens: TokenCache;
  readonly #clientId: string;
  readonly #headers: Readonly<Record<string, string>>;
  /** registry → the challenge it last sent. */
  readonly #challenges = new Map<string, Challenge>();
  /** Token fetches under way, so concurrent requests share one. */
  readonly #pending = new Map<string, Promise<string>>();

  constructor(init: AuthenticatorInit) {
    this.#exchanger = init.exchanger;
    this.#isPlainHttp = init.isPlainHttp;
    this.#logger = init.logger;
    this.#tokens = init.tokenCache ?? new TokenCache();
    this.#clientId = init.clientId ?? 'shoal';
    this.#headers = init.headers ?? {};
  }

  /**
   * The Authorization for a first request: what the registry's remembered
   * challenge asks for (a cached or newly fetched token, or Basic), or
   * undefined when no challenge is known yet or this credential cannot answer it.
   */
  async prepare(registry: string, scope: string, credential: Credential, signal: AbortSignal): Promise<Prepared | undefined> {
    const challenge = this.#challenges.get(registry);
    if (challenge === undefined) return undefined;
    return this.#answer(registry, challenge, scope, credential, signal, false);
  }

  /**
   * The Authorization that answers a 401's WWW-Authenticate header, with a new
   * token (a cached one was just refused). undefined when this credential
   * cannot answer it, or when `refused` was already its fresh answer to this
   * same challenge (asking again would only be refused again). Throws
   * UpstreamError('unauthorized') when the token server refuses the
   * credential, other UpstreamErrors when it fails.
   */
  async answer(registry: string, header: string | null, scope: string, credential: Credential, signal: AbortSignal, refused: Prepared | undefined): Promise<string | undefined> {
    const challenge = chooseChallenge(header);
    if (challenge === undefined) {
      this.#logger.debug('registry asked for authentication we do not speak', { registry, challenge: header?.slice(0, 200) ?? 'none' });
      return undefined;
    }
    const known = this.#challenges.get(registry);
    this.#challenges.set(registry, challenge);
    if (refused?.fresh === true && known !== undefined && sameChallenge(known, challenge)) return undefined;
    return (await this.#answer(registry, challenge, scope, credential, signal, true))?.authorization;
  }

  async #answer(registry: string, challenge: Challenge, scope: string, credential: Credential, signal: AbortSignal, renew: boolean): Promise<Prepared | undefined> {
    if (challenge.scheme === 'basic') {
      return credential?.kind === 'basic' ? { authorization: basicAuthorization(credential.username, credential.password), fresh: true } : undefined;
    }
    const key = [registry, challenge.params.realm, challenge.params.service ?? '', scope, fingerprint(credential)].join('\n');
    if (renew) this.#tokens.delete(key);
    const cached = this.#tokens.get(key);
    if (cached !== undefined) return { authorization: `Bearer ${cached}`, fresh: false };
    const shared = this.#pending.get(key);
    if (shared !== undefined) {
      try {
        return { authorization: `Bearer ${await untilAborted(shared, signal)}`, fresh: true };
      } catch (err) {
        // The caller who started that fetch gave up (its signal's reason came back), not us: fetch our own.
        if (err instanceof UpstreamError || signal.aborted) throw err;
      }
    }
    const own: Promise<string> = this.#fetchToken(registry, challenge, scope, credential, signal, key).finally(() => {
      if (this.#pending.get(key) === own) this.#pending.delete(key);
    });
    this.#pending.set(key, own);
    return { authorization: `Bearer ${await own}`, fresh: true };
  }

  async #fetchToken(registry: string, challenge: Challenge, scope: string, credential: Credential, signal: AbortSignal, key: string): Promise<string> {
    const realm = this.#realm(registry, challenge);
    const service = challenge.params.service;
    let res: BufferedResponse;
    let how: string;
    if (credential?.kind === 'identity-token') {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: credential.token, client_id: this.#clientId, scope });
      if (service !== undefined) form.set('service', service);
      res = await this.#exchanger.buffered(this.#request(registry, 'POST', realm, { form }), signal, MAX_TOKEN_RESPONSE_BYTES);
      how = 'oauth2 refresh token';
      if (OAUTH_FALLBACK_STATUSES.has(res.status)) {
        this.#logger.debug('token server refused the OAuth2 POST; asking with GET', { registry, realm: realm.host, status: res.status });
        res = await this.#getToken(registry, realm, service, scope, basicAuthorization('', credential.token), signal);
        how = 'identity token as password';
      }
    } else {
      const authorization = credential === undefined ? undefined : basicAuthorization(credential.username, credential.password);
      res = await this.#getToken(registry, realm, service, scope, authorization, signal);
      how = credential === undefined ? 'anonymous' : 'basic';
    }
    if (res.status !== 200) throw tokenFailure(registry, realm, res.status);
    const { token, expiresIn } = parseTokenResponse(registry, realm, res.body);
    this.#tokens.set(key, token, expiresIn);
    this.#logger.debug('fetched registry token', { registry, realm: realm.host, scope, auth: how, expiresInS: expiresIn ?? 'unset' });
    return token;
  }

  #getToken(registry: string, realm: URL, service: string | undefined, scope: string, authorization: string | undefined, signal: AbortSignal): Promise<BufferedResponse> {
    const url = new URL(realm);
    if (service !== undefined) url.searchParams.set('service', service);
    url.searchParams.set('scope', scope);
    url.searchParams.set('client_id', this.#clientId);
    return this.#exchanger.buffered(this.#request(registry, 'GET', url, { authorization }), signal, MAX_TOKEN_RESPONSE_BYTES);
  }

  #request(registry: string, method: 'GET' | 'POST', url: URL, extra: { authorization?: string; form?: URLSearchParams }): HttpRequest {
    return { registry, method, url, headers: { ...this.#headers, accept: 'application/json' }, ...extra };
  }

  /** The realm as a URL: http(s) only, and http only for a registry that is itself plain http (credentials go there). */
  #realm(registry: string, challenge: Challenge): URL {
    let realm: URL;
    try {
      realm = new URL(challenge.params.realm ?? '');
    } catch {
      throw new UpstreamError('invalid', registry, `token realm "${(challenge.params.realm ?? '').slice(0, 200)}" is not a URL`);
    }
    if (realm.protocol === 'https:' || (realm.protocol === 'http:' && this.#isPlainHttp(registry))) return realm;
    throw new UpstreamError('invalid', registry, `token realm ${realm.protocol}//${realm.host} is not https`);
  }
}

/** `promise`, or the signal's reason as soon as it fires. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Which credential a token belongs to, without keeping the secret in the key. */
function fingerprint(credential: Credential): string {
  if (credential === undefined) return 'anonymous';
  const secret = credential.kind === 'basic' ? `basic\n${credential.username}\n${credential.password}` : `identity-token\n${credential.token}`;
  return createHash('sha256').update(secret).digest('hex');
}

function tokenFailure(registry: string, realm: URL, status: number): UpstreamError {
  const what = `token server ${realm.host}${realm.pathname} answered ${status}`;
  if (status === 400 || status === 401 || status === 403) return new UpstreamError('unauthorized', registry, `${what}: credentials refused`, status);
  if (status === 429) return new UpstreamError('rate-limited', registry, what, status);
  return new UpstreamError('invalid', registry, what, status);
}

/** `token` or `access_token` (the spec allows either; both must agree if both come), and `expires_in`. */
export function parseTokenResponse(registry: string, realm: URL, body: Buffer): { token: string; expiresIn: number | undefined } {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    throw new UpstreamError('invalid', registry, `token server ${realm.host}: answer is not JSON`);
  }
  if (typeof doc !== 'object' || doc === null) throw new UpstreamError('invalid', registry, `token server ${realm.host}: answer is not a JSON object`);
  const { token, access_token: accessToken, expires_in: expiresIn } = doc as Record<string, unknown>;
  const value = typeof token === 'string' && token.length > 0 ? token : typeof accessToken === 'string' && accessToken.length > 0 ? accessToken : undefined;
  if (value === undefined) throw new UpstreamError('invalid', registry, `token server ${realm.host}: answer has neither "token" nor "access_token"`);
  const seconds = typeof expiresIn === 'number' ? expiresIn : typeof expiresIn === 'string' && /^[0-9]+$/.test(expiresIn) ? Number(expiresIn) : undefined;
  return { token: value, expiresIn: seconds };
}
