/**
 * The upstream distribution client: manifests from the registries images name,
 * byte for byte, digests checked. Resolving a tag asks HEAD with every manifest
 * media type in Accept and takes Docker-Content-Digest; a registry that leaves
 * it out gets a GET and the body is hashed. An index is the answer, never a
 * platform's manifest inside it: a pod pinned to the index digest still pulls
 * the right platform on every node.
 *
 * Every call runs through the registry's circuit breaker, then through each
 * credential in turn (see auth.ts), each HTTP exchange with a time limit and
 * bounded retries (see exchange.ts). Blobs stream: see blob.ts.
 */
import { digestOf, DigestError, parseDigest, type Digest } from '../digest.ts';
import { effectiveTag, type ImageRef } from '../image-ref.ts';
import { silentLogger, type Logger } from '../log.ts';
import { MANIFEST_MEDIA_TYPES, manifestMediaType, MAX_MANIFEST_BYTES } from '../media-types.ts';
import { parseMirroredRegistry } from '../registries.ts';
import { Authenticator, pullScope, type Credential } from './auth.ts';
import { BLOB_DEFAULTS, blobPath, blobRequestHeaders, openedBlob, type OpenBlobOptions, type UpstreamBlob } from './blob.ts';
import { CIRCUIT_BREAKER_DEFAULTS, CircuitBreaker, CircuitOpenError, type CallOutcome, type CircuitState } from './circuit-breaker.ts';
import { describe, Exchanger } from './exchange.ts';
import { RETRY_DEFAULTS, RetryPolicy } from './retry.ts';
import { TokenCache } from './token-cache.ts';
import { contentLength, mediaTypeOf, readBody, type FetchFn, type HttpRequest } from './transport.ts';
import { UpstreamError, type ManifestDescriptor, type RegistryCredentials } from './types.ts';

export interface UpstreamClientInit {
  /** Registries (host:port, as image references name them) spoken to over plain http; every other one over https. Default none. */
  plainHttpRegistries?: Iterable<string>;
  /** Longest one HTTP exchange may take, answer read included. Default 2000 ms. */
  requestTimeoutMs?: number;
  /** Attempts after the first for 5xx, connection errors and timeouts. Default 2. */
  retries?: number;
  /** Backoff before the first retry, doubling for each further one (half of it random). Default 100 ms. */
  retryBaseDelayMs?: number;
  /** Longest backoff. Default 2000 ms. */
  retryMaxDelayMs?: number;
  /** One breaker per registry: this many calls failing in a row (default 5) ... */
  circuitFailureThreshold?: number;
  /** ... each within this long of the one before (default 30 s) ... */
  circuitWindowMs?: number;
  /** ... open it for this long (default 10 s); then one probe call decides. */
  circuitCooldownMs?: number;
  /** Default: silent. */
  logger?: Logger;
  /** User-Agent on every request. Default `shoal`. */
  userAgent?: string;
  /** Default: the global fetch. For tests. */
  fetch?: FetchFn;
  /**
   * For blob downloads (openBlob), the bulk of the bytes. Default: `fetch`.
   * The mirror passes http1Fetch, which reads into pooled buffers.
   */
  blobFetch?: FetchFn;
  /** Clock for token expiry and breakers. Default Date.now. For tests. */
  now?: () => number;
}

export const UPSTREAM_CLIENT_DEFAULTS = {
  requestTimeoutMs: 2000,
  retries: RETRY_DEFAULTS.retries,
  retryBaseDelayMs: RETRY_DEFAULTS.baseDelayMs,
  retryMaxDelayMs: RETRY_DEFAULTS.maxDelayMs,
  circuitFailureThreshold: CIRCUIT_BREAKER_DEFAULTS.failureThreshold,
  circuitWindowMs: CIRCUIT_BREAKER_DEFAULTS.windowMs,
  circuitCooldownMs: CIRCUIT_BREAKER_DEFAULTS.cooldownMs,
  userAgent: 'shoal',
} as const;

export interface FetchedManifest {
  readonly descriptor: ManifestDescriptor;
  /** Exactly the bytes the registry sent; they hash to descriptor.digest. */
  readonly bytes: Buffer;
}

const ACCEPT = MANIFEST_MEDIA_TYPES.join(', ');
/** Error bodies are read this far for their OCI error code. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;

export class UpstreamClient {
  readonly #plainHttp: ReadonlySet<string>;
  readonly #init: UpstreamClientInit;
  readonly #logger: Logger;
  readonly #userAgent: string;
  readonly #exchanger: Exchanger;
  readonly #auth: Authenticator;
  readonly #breakers = new Map<string, CircuitBreaker>();
  readonly #bases = new Map<string, URL>();

  constructor(init: UpstreamClientInit = {}) {
    this.#init = init;
    this.#plainHttp = new Set([...(init.plainHttpRegistries ?? [])].map((r) => r.toLowerCase()));
    this.#logger = init.logger ?? silentLogger;
    this.#userAgent = init.userAgent ?? UPSTREAM_CLIENT_DEFAULTS.userAgent;
    this.#exchanger = new Exchanger({
      fetch: init.fetch ?? globalThis.fetch,
      streamFetch: init.blobFetch,
      requestTimeoutMs: init.requestTimeoutMs ?? UPSTREAM_CLIENT_DEFAULTS.requestTimeoutMs,
      retry: new RetryPolicy({ retries: init.retries, baseDelayMs: init.retryBaseDelayMs, maxDelayMs: init.retryMaxDelayMs }),
      logger: this.#logger,
    });
    this.#auth = new Authenticator({
      exchanger: this.#exchanger,
      isPlainHttp: (registry) => this.#plainHttp.has(registry.toLowerCase()),
      logger: this.#logger,
      tokenCache: new TokenCache({ now: init.now }),
      headers: { 'user-agent': this.#userAgent },
    });
  }

  /**
   * The manifest or index a reference names now: its tag (or `latest`), or,
   * for a reference with a digest, that digest (checked to exist). Credentials
   * are tried in order; none: anonymous.
   */
  async resolve(ref: ImageRef, credentials: readonly RegistryCredentials[], signal: AbortSignal): Promise<ManifestDescriptor> {
    const reference = ref.digest ?? effectiveTag(ref);
    const path = manifestPath(ref.repository, reference);
    const head = await this.#call(ref.registry, ref.repository, credentials, signal, { method: 'HEAD', path }, async (res, req) => {
      if (res.status === 404 || res.status === 429) throw await statusFailure(req, res);
      // Some registries do not serve HEAD (405, 400, ...): GET tells.
      if (res.status !== 200) return undefined;
      return describeFromHeaders(req, res.headers, ref.digest);
    });
    if (head !== undefined) return head;
    this.#logger.debug('HEAD named no digest; hashing the manifest', { registry: ref.registry, repository: ref.repository, reference: typeof reference === 'string' ? reference : reference.text });
    return (await this.getManifest(ref.registry, ref.repository, reference, credentials, signal)).descriptor;
  }

  /**
   * A manifest's exact bytes by tag or digest. The digest is the requested one,
   * else Docker-Content-Digest, else the body's sha256; the body must hash to
   * it (UpstreamError('invalid') otherwise).
   */
  async getManifest(registry: string, repository: string, reference: string | Digest, credentials: readonly RegistryCredentials[], signal: AbortSignal): Promise<FetchedManifest> {
    const path = manifestPath(repository, reference);
    const requested = typeof reference === 'string' ? undefined : reference;
    return this.#call(registry, repository, credentials, signal, { method: 'GET', path }, async (res, req) => {
      if (res.status !== 200) throw await statusFailure(req, res);
      const bytes = await readBody(res, MAX_MANIFEST_BYTES, () => new UpstreamError('invalid', registry, `${describe(req)}: manifest larger than ${MAX_MANIFEST_BYTES} bytes`, res.status));
      return { descriptor: describeFromBody(req, res.headers, bytes, requested), bytes };
    });
  }

  /**
   * A blob's bytes from `options.offset` (default 0) as they arrive, through
   * redirects (a CDN gets no Authorization), with the manifests' credentials
   * and tokens. Resolves once the first byte is in: until then 5xx and broken
   * or silent connections are retried; 401/403 (every credential), 404 and
   * 429 are not (UpstreamError 'unauthorized', 'not-found', 'rate-limited').
   * The registry's breaker sees the outcome up to the first byte. Unchecked:
   * the caller hashes the whole blob.
   */
  async openBlob(registry: string, repository: string, digest: Digest, credentials: readonly RegistryCredentials[], options: OpenBlobOptions): Promise<UpstreamBlob> {
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`blob offset ${offset} is not a byte position`);
    const idleTimeoutMs = options.idleTimeoutMs ?? BLOB_DEFAULTS.idleTimeoutMs;
    const call: ApiCall = { method: 'GET', path: blobPath(repository, digest), headers: blobRequestHeaders(offset), answerTimeoutMs: idleTimeoutMs };
    return this.#call(registry, repository, credentials, options.signal, call, async (res, req) => {
      if (res.status !== 200 && res.status !== 206) throw await statusFailure(req, res);
      return openedBlob(req, res, offset, idleTimeoutMs, options.signal);
    });
  }

  /** The state of a registry's circuit breaker (closed when never called). */
  circuitState(registry: string): CircuitState {
    return this.#breakers.get(registry)?.state ?? 'closed';
  }

  /**
   * One registry API call: through the registry's breaker, then each
   * credential in turn until one is not refused (401/403). `handle` gets every
   * other answer and either returns the result or throws.
   */
  async #call<T>(
    registry: string,
    repository: string,
    credentials: readonly RegistryCredentials[],
    signal: AbortSignal,
    call: ApiCall,
    handle: (res: Response, req: HttpRequest) => Promise<T>,
  ): Promise<T> {
    try {
      return await this.#breaker(registry).run(() => this.#withCredentials(registry, repository, credentials, signal, call, handle), judge);
    } catch (err) {
      if (err instanceof CircuitOpenError) throw new UpstreamError('circuit-open', registry, `${registry}: not tried, ${err.message}`);
      throw err;
    }
  }

  async #withCredentials<T>(
    registry: string,
    repository: string,
    credentials: readonly RegistryCredentials[],
    signal: AbortSignal,
    call: ApiCall,
    handle: (res: Response, req: HttpRequest) => Promise<T>,
  ): Promise<T> {
    const scope = pullScope(repository);
    const candidates: readonly Credential[] = credentials.length > 0 ? credentials : [undefined];
    const base: HttpRequest = {
      registry,
      method: call.method,
      url: new URL(call.path, this.#base(registry)),
      headers: { accept: ACCEPT, 'user-agent': this.#userAgent, ...call.headers },
    };
    const refusals: string[] = [];
    let lastStatus: number | undefined;
    for (const [index, credential] of candidates.entries()) {
      const who = credential === undefined ? 'anonymous' : `credential ${index + 1} (${credential.kind})`;
      try {
        const prepared = await this.#auth.prepare(registry, scope, credential, signal);
        let outcome = await this.#send({ ...base, authorization: prepared?.authorization }, signal, handle, call.answerTimeoutMs);
        if (outcome.refused && outcome.status === 401) {
          const authorization = await this.#auth.answer(registry, outcome.challenge, scope, credential, signal, prepared);
          if (authorization !== undefined) outcome = await this.#send({ ...base, authorization }, signal, handle, call.answerTimeoutMs);
        }
        if (!outcome.refused) return outcome.value;
        refusals.push(`${who}: ${outcome.status}`);
        lastStatus = outcome.status;
      } catch (err) {
        if (!(err instanceof UpstreamError) || err.failure !== 'unauthorized') throw err;
        refusals.push(`${who}: ${err.message}`);
        lastStatus = err.status;
      }
      this.#logger.debug('upstream refused a credential', { registry, repository, credential: who, status: lastStatus ?? 'none' });
    }
    throw new UpstreamError('unauthorized', registry, `${describe(base)}: refused (${refusals.join('; ')})`, lastStatus);
  }

  /**
   * One request (with retries); a 401 or 403 comes back as a refusal, anything
   * else goes to `handle`. With `answerTimeoutMs`, streamed (Exchanger.stream).
   */
  #send<T>(req: HttpRequest, signal: AbortSignal, handle: (res: Response, req: HttpRequest) => Promise<T>, answerTimeoutMs?: number): Promise<Outcome<T>> {
    const use = async (res: Response): Promise<Outcome<T>> => {
      if (res.status === 401 || res.status === 403) return { refused: true, status: res.status, challenge: res.headers.get('www-authenticate') };
      return { refused: false, value: await handle(res, req) };
    };
    return answerTimeoutMs === undefined ? this.#exchanger.run(req, signal, use) : this.#exchanger.stream(req, signal, answerTimeoutMs, use);
  }

  #breaker(registry: string): CircuitBreaker {
    let breaker = this.#breakers.get(registry);
    if (breaker === undefined) {
      const cooldownMs = this.#init.circuitCooldownMs ?? UPSTREAM_CLIENT_DEFAULTS.circuitCooldownMs;
      breaker = new CircuitBreaker({
        failureThreshold: this.#init.circuitFailureThreshold,
        windowMs: this.#init.circuitWindowMs,
        cooldownMs,
        now: this.#init.now,
        onStateChange: (to, from) => {
          if (to === 'open') this.#logger.warn('upstream failing: circuit open, calls fail fast', { registry, from, cooldownMs });
          else if (to === 'closed') this.#logger.info('upstream answering again: circuit closed', { registry });
          else this.#logger.debug('upstream circuit half-open: next call probes', { registry });
        },
      });
      this.#breakers.set(registry, breaker);
    }
    return breaker;
  }

  /** Where a registry's API is: `docker.io` → https://registry-1.docker.io, plain-http ones over http. */
  #base(registry: string): URL {
    let base = this.#bases.get(registry);
    if (base === undefined) {
      base = this.#plainHttp.has(registry.toLowerCase()) ? new URL(`http://${registry}`) : parseMirroredRegistry(registry).upstream;
      this.#bases.set(registry, base);
    }
    return base;
  }
}

interface ApiCall {
  readonly method: 'GET' | 'HEAD';
  readonly path: string;
  /** Added to (or replacing) the usual Accept and User-Agent. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Stream the answer: it must come within this long, then `handle` owns the body's pace (Exchanger.stream). */
  readonly answerTimeoutMs?: number;
}

type Outcome<T> = { readonly refused: false; readonly value: T } | { readonly refused: true; readonly status: number; readonly challenge: string | null };

/** Only an upstream that did not answer counts against its breaker; the caller giving up says nothing. */
function judge(err: unknown): CallOutcome {
  if (!(err instanceof UpstreamError)) return 'ignored';
  return err.failure === 'unavailable' ? 'failure' : 'success';
}

function manifestPath(repository: string, reference: string | Digest): string {
  return `/v2/${repository}/manifests/${typeof reference === 'string' ? reference : reference.text}`;
}

/** A descriptor from a HEAD's headers, or undefined when they do not name digest, manifest type and size. */
function describeFromHeaders(req: HttpRequest, headers: Headers, requested: Digest | undefined): ManifestDescriptor | undefined {
  const digest = headerDigest(req, headers);
  const mediaType = mediaTypeOf(headers);
  const size = contentLength(headers);
  if (digest === undefined || mediaType === undefined || !MANIFEST_MEDIA_TYPES.includes(mediaType) || size === undefined) return undefined;
  if (requested !== undefined && digest.text !== requested.text) {
    throw new UpstreamError('invalid', req.registry, `${describe(req)}: asked for ${requested.text}, registry names ${digest.text}`);
  }
  return { digest, mediaType, size };
}

function describeFromBody(req: HttpRequest, headers: Headers, bytes: Buffer, requested: Digest | undefined): ManifestDescriptor {
  const named = headerDigest(req, headers);
  if (requested !== undefined && named !== undefined && named.text !== requested.text) {
    throw new UpstreamError('invalid', req.registry, `${describe(req)}: asked for ${requested.text}, registry names ${named.text}`);
  }
  const expected = requested ?? named;
  const actual = digestOf(bytes, expected?.algorithm);
  if (expected !== undefined && actual.text !== expected.text) {
    throw new UpstreamError('invalid', req.registry, `${describe(req)}: content hashes to ${actual.text}, not ${expected.text}`);
  }
  const declared = mediaTypeOf(headers);
  const mediaType = declared !== undefined && MANIFEST_MEDIA_TYPES.includes(declared) ? declared : manifestMediaType(bytes);
  if (mediaType === undefined) {
    throw new UpstreamError('invalid', req.registry, `${describe(req)}: not an OCI or Docker v2 manifest (Content-Type ${declared ?? 'absent'})`);
  }
  return { digest: actual, mediaType, size: bytes.length };
}

function headerDigest(req: HttpRequest, headers: Headers): Digest | undefined {
  const text = headers.get('docker-content-digest');
  if (text === null || text.trim() === '') return undefined;
  try {
    return parseDigest(text.trim());
  } catch (err) {
    if (err instanceof DigestError) throw new UpstreamError('invalid', req.registry, `${describe(req)}: Docker-Content-Digest: ${err.message}`);
    throw err;
  }
}

/** The UpstreamError for an answer other than 200: its status, and the OCI error code and message when the body has them. */
async function statusFailure(req: HttpRequest, res: Response): Promise<UpstreamError> {
  let detail = '';
  if (req.method !== 'HEAD') {
    try {
      detail = ociErrorSummary(await readBody(res, MAX_ERROR_BODY_BYTES, () => new Error('error body too large')));
    } catch {
      // the status alone says enough
    }
  }
  const what = `${describe(req)}: ${res.status}${detail ? ` ${detail}` : ''}`;
  if (res.status === 404) return new UpstreamError('not-found', req.registry, what, 404);
  if (res.status === 429) {
    const retryAfter = res.headers.get('retry-after');
    return new UpstreamError('rate-limited', req.registry, retryAfter ? `${what} (retry after ${retryAfter.slice(0, 40)})` : what, 429);
  }
  return new UpstreamError('invalid', req.registry, `${what}: unexpected status`, res.status);
}

/** `MANIFEST_UNKNOWN: manifest unknown` from `{"errors":[{"code":..., "message":...}]}`; '' when the body is not that. */
function ociErrorSummary(body: Buffer): string {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { errors?: { code?: unknown; message?: unknown }[] };
    const first = doc.errors?.[0];
    if (first === undefined) return '';
    const code = typeof first.code === 'string' ? first.code : '';
    const message = typeof first.message === 'string' ? first.message : '';
    return [code, message].filter(Boolean).join(': ').slice(0, 300);
  } catch {
    return '';
  }
}
