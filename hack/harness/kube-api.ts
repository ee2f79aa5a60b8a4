/**
 * A small stand-in for the Kubernetes API server, for what the webhook uses: get
 * Secrets and ServiceAccounts, list and watch Namespaces, get and patch
 * MutatingWebhookConfigurations. It speaks the real API's JSON (objects with
 * apiVersion, kind and full metadata; `Status` errors; watch events as JSON lines
 * on a chunked response), checks a bearer token and, if given, RBAC-style rules,
 * and keeps a log of every request. Tests change the store and the watchers see it.
 *
 * Faithful where a client could notice: authentication before authorization before
 * lookup (401, 403, then 404); list items without apiVersion/kind; watches from a
 * resourceVersion replay what happened after it, a compacted one gets a 410
 * `Expired` ERROR event on a 200 response (as the watch cache answers); a failed JSON
 * Patch operation is a 422; an unknown patch media type a 415. Not modelled:
 * pagination, selectors, server-side apply, creation and deletion over HTTP.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

export interface ObjectMeta {
  name: string;
  namespace?: string;
  [key: string]: unknown;
}

/** An object as the API stores and serves it. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [key: string]: unknown;
}

/** An rbac.authorization.k8s.io/v1 PolicyRule: what the caller's (Cluster)Roles allow. */
export interface PolicyRule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
  readonly resourceNames?: readonly string[];
}

/** One request to deny on top of the rules, e.g. `{ verb: 'get', resource: 'secrets', namespace: 'team-a' }`. */
export interface DenyRule {
  verb?: string;
  resource?: string;
  namespace?: string;
  name?: string;
}

export interface KubeApiInit {
  /** Serve HTTPS with a fresh self-signed certificate for 127.0.0.1 (made with openssl). Default true. */
  tls?: boolean;
  /** Bearer token every request must carry (else 401); null: no authentication. Default `stand-in-token`. */
  token?: string | null;
  /** If given, only requests these rules allow pass (else 403), like the caller's bound Roles. */
  rules?: readonly PolicyRule[];
  /** The caller's user name in 403 messages. Default `system:serviceaccount:shoal-system:shoal-webhook`. */
  user?: string;
}

export interface RecordedRequest {
  method: string;
  /** Path without the query. */
  path: string;
  query: Record<string, string>;
  contentType: string | undefined;
  authorization: string | undefined;
  /** The body parsed as JSON, or its text when it is not JSON; undefined when empty. */
  body: unknown;
  /** The status answered (200 for a watch, whatever it streamed). */
  status: number;
  /** When it arrived (Date.now()). */
  at: number;
}

export interface KubeApi {
  /** `https://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  /** The CA (self-signed server certificate) to trust; undefined without TLS. */
  readonly caPem: string | undefined;
  readonly token: string | undefined;
  /** A kubeconfig (JSON, which is YAML) that points at this server with the token. */
  kubeconfig(): string;
  /** Writes the files a pod sees (token, ca.crt, namespace) under `<root>/var/run/secrets/kubernetes.io/serviceaccount`; returns the env it gets. */
  inClusterFiles(root: string, namespace?: string): { KUBERNETES_SERVICE_HOST: string; KUBERNETES_SERVICE_PORT: string };

  /** Creates or replaces an object (ADDED or MODIFIED to watchers); returns it as stored. */
  put(object: KubeObject): KubeObject;
  /** Deletes an object (DELETED to watchers); false if there was none. */
  remove(resource: string, namespace: string | undefined, name: string): boolean;
  /** The stored object, or undefined. */
  get(resource: string, namespace: string | undefined, name: string): KubeObject | undefined;
  namespace(name: string, annotations?: Record<string, string>): KubeObject;
  /** A `kubernetes.io/dockerconfigjson` Secret (or `kubernetes.io/dockercfg`, whose content is the bare auths map). */
  pullSecret(namespace: string, name: string, auths: Record<string, unknown>, type?: 'kubernetes.io/dockerconfigjson' | 'kubernetes.io/dockercfg'): KubeObject;
  serviceAccount(namespace: string, name: string, imagePullSecrets?: string[]): KubeObject;

  /** Further requests matching this get 403; returns what lifts the denial. */
  deny(rule: DenyRule): () => void;
  /** Answers (and starts watches) this much later, from now on. */
  setLatency(ms: number): void;
  /** Called with each request before it is answered: a test can change the store in between. */
  onRequest(hook: ((request: RecordedRequest) => void) | undefined): void;
  /** Ends every open watch: `end` as the server does at its timeout, `destroy` as a dropped connection. */
  dropWatches(how?: 'end' | 'destroy'): void;
  /** Forgets history: watches from an older resourceVersion get 410 Expired from now on. */
  compact(): void;
  /** Sends a BOOKMARK with the current resourceVersion to watches that allow them. */
  bookmark(): void;
  /** Open watches (of one resource, if given). */
  watchCount(resource?: string): number;
  /** The current resourceVersion (etcd's revision). */
  resourceVersion(): string;

  /** Every request so far, oldest first. */
  readonly requests: RecordedRequest[];
  stop(): Promise<void>;
}

interface ResourceType {
  group: string;
  version: string;
  kind: string;
  namespaced: boolean;
  /** Strategic merge patch: lists merged by key instead of replaced (from the Go types' patchMergeKey). */
  mergeKeys?: Record<string, string>;
}

const RESOURCES: Record<string, ResourceType> = {
  namespaces: { group: '', version: 'v1', kind: 'Namespace', namespaced: false },
  secrets: { group: '', version: 'v1', kind: 'Secret', namespaced: true },
  serviceaccounts: { group: '', version: 'v1', kind: 'ServiceAccount', namespaced: true, mergeKeys: { secrets: 'name' } },
  mutatingwebhookconfigurations: {
    group: 'admissionregistration.k8s.io',
    version: 'v1',
    kind: 'MutatingWebhookConfiguration',
    namespaced: false,
    mergeKeys: { webhooks: 'name' },
  },
};

const PATCH_TYPES = ['application/json-patch+json', 'application/merge-patch+json', 'application/apply-patch+yaml', 'application/strategic-merge-patch+json'];

/** What a request asks for, after routing. */
interface Target {
  resource: string;
  type: ResourceType;
  namespace: string | undefined;
  name: string | undefined;
  verb: 'get' | 'list' | 'watch' | 'patch';
}

interface Watcher {
  resource: string;
  namespace: string | undefined;
  bookmarks: boolean;
  res: ServerResponse;
}

interface HistoryEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KubeObject;
}

/** A meta/v1 Status, the body of every error answer. */
interface StatusBody {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: JsonObject;
  status: 'Failure';
  message: string;
  reason: string;
  details?: JsonObject;
  code: number;
}

class ApiError extends Error {
  readonly status: StatusBody;
  constructor(status: StatusBody) {
    super(status.message);
    this.status = status;
  }
}

function statusObject(code: number, reason: string, message: string, details?: JsonObject): StatusBody {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** `secrets` or `mutatingwebhookconfigurations.admissionregistration.k8s.io`, as the API names a resource in messages. */
function qualified(resource: string, type: ResourceType): string {
  return type.group ? `${resource}.${type.group}` : resource;
}

function notFound(t: Target): ApiError {
  const details: JsonObject = { name: t.name ?? '', ...(t.type.group ? { group: t.type.group } : {}), kind: t.resource };
  return new ApiError(statusObject(404, 'NotFound', `${qualified(t.resource, t.type)} "${t.name}" not found`, details));
}

function invalidPatch(message: string): ApiError {
  // What the apiserver answers when a JSON Patch does not apply (handlers/patch.go: NewGenericServerResponse(422, ...)).
  return new ApiError(
    statusObject(422, 'Invalid', 'the server rejected our request due to an error in our request', {
      causes: [{ reason: 'UnexpectedServerResponse', message }],
    }),
  );
}

function badRequest(message: string): ApiError {
  return new ApiError(statusObject(400, 'BadRequest', message));
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function makeCertificate(): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kube-api-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
        '-subj', '/CN=kube-api-stand-in', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
        '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function startKubeApi(init: KubeApiInit = {}): Promise<KubeApi> {
  const tls = init.tls ?? true;
  const token = init.token === null ? undefined : (init.token ?? 'stand-in-token');
  const user = init.user ?? 'system:serviceaccount:shoal-system:shoal-webhook';
  const certificate = tls ? makeCertificate() : undefined;

  const objects = new Map<string, KubeObject>();
  const history: HistoryEvent[] = [];
  const watchers = new Set<Watcher>();
  const denied: DenyRule[] = [];
  const requests: RecordedRequest[] = [];
  const stopping = new AbortController();
  let latencyMs = 0;
  let hook: ((request: RecordedRequest) => void) | undefined;
  let revision = 1000;
  let compactedBefore = 0;

  const keyOf = (resource: string, namespace: string | undefined, name: string) => `${resource}/${namespace ?? ''}/${name}`;
  const resourceOfKind = (apiVersion: string, kind: string): string => {
    for (const [resource, type] of Object.entries(RESOURCES)) {
      if (type.kind === kind && apiVersion === (type.group ? `${type.group}/${type.version}` : type.version)) return resource;
    }
    throw new Error(`kube-api stand-in: no resource for ${apiVersion} ${kind}`);
  };

  function send(watcher: Watcher, type: string, object: unknown): void {
    if (!watcher.res.writableEnded) watcher.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  function record(type: HistoryEvent['type'], resource: string, object: KubeObject): void {
    const rv = Number(object.metadata.resourceVersion);
    history.push({ rv, type, object: clone(object) });
    for (const w of watchers) {
      if (w.resource === resource && (w.namespace === undefined || w.namespace === object.metadata.namespace)) send(w, type, object);
    }
  }

  function store(resource: string, object: KubeObject, previous: KubeObject | undefined): KubeObject {
    revision += 1;
    const meta = object.metadata;
    meta.uid = previous?.metadata.uid ?? randomUUID();
    meta.creationTimestamp = previous?.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    meta.resourceVersion = String(revision);
    if (resource === 'mutatingwebhookconfigurations') {
      const spec = (o: KubeObject | undefined) => JSON.stringify({ ...o, metadata: undefined });
      const generation = typeof previous?.metadata.generation === 'number' ? previous.metadata.generation : 0;
      meta.generation = previous && spec(previous) === spec(object) ? generation : generation + 1;
    }
    objects.set(keyOf(resource, meta.namespace, meta.name), object);
    record(previous ? 'MODIFIED' : 'ADDED', resource, object);
    return clone(object);
  }

  function put(input: KubeObject): KubeObject {
    const resource = resourceOfKind(input.apiVersion, input.kind);
    const type = RESOURCES[resource]!;
    const object = clone(input);
    if (type.namespaced !== (object.metadata.namespace !== undefined)) {
      throw new Error(`kube-api stand-in: ${input.kind} ${object.metadata.name} ${type.namespaced ? 'needs' : 'has no'} namespace`);
    }
    if (resource === 'namespaces') {
      // Set by the API server on every namespace since 1.21.
      const labels = isObject(object.metadata.labels) ? object.metadata.labels : {};
      object.metadata.labels = { ...labels, 'kubernetes.io/metadata.name': object.metadata.name };
      object.spec ??= { finalizers: ['kubernetes'] };
      object.status ??= { phase: 'Active' };
    }
    return store(resource, object, objects.get(keyOf(resource, object.metadata.namespace, object.metadata.name)));
  }

  function remove(resource: string, namespace: string | undefined, name: string): boolean {
    const key = keyOf(resource, namespace, name);
    const object = objects.get(key);
    if (!object) return false;
    objects.delete(key);
    revision += 1;
    object.metadata.resourceVersion = String(revision);
    record('DELETED', resource, object);
    return true;
  }

  // --- routing and authorization ---

  function route(method: string, path: string, query: URLSearchParams): Target {
    const m = /^\/(?:api\/v1|apis\/([^/]+)\/([^/]+))(?:\/namespaces\/([^/]+)(?=\/[^/]+))?\/([^/]+)(?:\/([^/]+))?$/.exec(path);
    const unknown = new ApiError(statusObject(404, 'NotFound', 'the server could not find the requested resource', {}));
    if (!m) throw unknown;
    const [, group = '', version = 'v1', namespace, resource = '', rawName] = m;
    const type = RESOURCES[resource];
    if (!type || type.group !== group || type.version !== version || (namespace !== undefined && !type.namespaced)) throw unknown;
    const name = rawName === undefined ? undefined : decodeURIComponent(rawName);
    const ns = namespace === undefined ? undefined : decodeURIComponent(namespace);
    const watch = query.get('watch') === 'true' || query.get('watch') === '1';
    let verb: Target['verb'] | undefined;
    if (method === 'GET') verb = name === undefined ? (watch ? 'watch' : 'list') : 'get';
    else if (method === 'PATCH' && name !== undefined) verb = 'patch';
    if (!verb) {
      throw new ApiError(statusObject(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource', {}));
    }
    if (type.namespaced && ns === undefined && verb !== 'list' && verb !== 'watch') throw unknown;
    return { resource, type, namespace: ns, name, verb };
  }

  function authorize(t: Target): void {
    const denies = denied.some(
      (d) =>
        (d.verb === undefined || d.verb === t.verb) &&
        (d.resource === undefined || d.resource === t.resource) &&
        (d.namespace === undefined || d.namespace === t.namespace) &&
        (d.name === undefined || d.name === t.name),
    );
    const allowed =
      init.rules === undefined ||
      init.rules.some(
        (r) =>
          (r.apiGroups.includes('*') || r.apiGroups.includes(t.type.group)) &&
          (r.resources.includes('*') || r.resources.includes(t.resource)) &&
          (r.verbs.includes('*') || r.verbs.includes(t.verb)) &&
          (r.resourceNames === undefined || r.resourceNames.length === 0 || (t.name !== undefined && r.resourceNames.includes(t.name))),
      );
    if (!denies && allowed) return;
    const subject = t.name === undefined ? qualified(t.resource, t.type) : `${qualified(t.resource, t.type)} "${t.name}"`;
    const scope = t.namespace === undefined ? 'at the cluster scope' : `in the namespace "${t.namespace}"`;
    const message = `${subject} is forbidden: User "${user}" cannot ${t.verb} resource "${t.resource}" in API group "${t.type.group}" ${scope}`;
    const details: JsonObject = { ...(t.name !== undefined ? { name: t.name } : {}), ...(t.type.group ? { group: t.type.group } : {}), kind: t.resource };
    throw new ApiError(statusObject(403, 'Forbidden', message, details));
  }

  // --- verbs ---

  function list(t: Target): unknown {
    const items = [...objects.entries()]
      .filter(([key]) => key.startsWith(`${t.resource}/`))
      .map(([, o]) => o)
      .filter((o) => t.namespace === undefined || o.metadata.namespace === t.namespace)
      .sort((a, b) => keyOf('', a.metadata.namespace, a.metadata.name).localeCompare(keyOf('', b.metadata.namespace, b.metadata.name)))
      // Items of a list carry no apiVersion/kind: the list's own say what they are.
      .map(({ apiVersion: _a, kind: _k, ...rest }) => rest);
    const apiVersion = t.type.group ? `${t.type.group}/${t.type.version}` : t.type.version;
    return { kind: `${t.type.kind}List`, apiVersion, metadata: { resourceVersion: String(revision) }, items };
  }

  function watch(t: Target, query: URLSearchParams, res: ServerResponse): void {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const watcher: Watcher = { resource: t.resource, namespace: t.namespace, bookmarks: query.get('allowWatchBookmarks') === 'true', res };
    const from = query.get('resourceVersion') ?? '';
    const matches = (o: KubeObject) => t.namespace === undefined || o.metadata.namespace === t.namespace;
    if (from === '' || from === '0') {
      // No starting point: the current state as synthetic ADDED events, then changes.
      for (const [key, o] of objects) if (key.startsWith(`${t.resource}/`) && matches(o)) send(watcher, 'ADDED', o);
    } else {
      const rv = Number(from);
      if (!Number.isInteger(rv)) {
        res.end(`${JSON.stringify({ type: 'ERROR', object: statusObject(400, 'BadRequest', `invalid resource version: ${from}`) })}\n`);
        return;
      }
      if (rv < compactedBefore) {
        const status = statusObject(410, 'Expired', `too old resource version: ${rv} (${compactedBefore})`);
        res.end(`${JSON.stringify({ type: 'ERROR', object: status })}\n`);
        return;
      }
      for (const e of history) {
        if (e.rv > rv && resourceOfKind(e.object.apiVersion, e.object.kind) === t.resource && matches(e.object)) send(watcher, e.type, e.object);
      }
    }
    watchers.add(watcher);
    const timeout = Number(query.get('timeoutSeconds') ?? 0);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      clearTimeout(timer);
      watchers.delete(watcher);
    });
  }

  function patch(t: Target, contentType: string | undefined, text: string): KubeObject {
    const mediaType = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
    if (!PATCH_TYPES.includes(mediaType)) {
      throw new ApiError(
        statusObject(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: ${PATCH_TYPES.join(', ')}`),
      );
    }
    if (mediaType === 'application/apply-patch+yaml') throw new ApiError(statusObject(500, 'InternalError', 'kube-api stand-in: server-side apply is not implemented'));
    let body: Json;
    try {
      body = JSON.parse(text) as Json;
    } catch (err) {
      throw badRequest(`error decoding patch: ${(err as Error).message}`);
    }
    const current = objects.get(keyOf(t.resource, t.namespace, t.name!));
    if (!current) throw notFound(t);
    let patched: Json;
    if (mediaType === 'application/json-patch+json') patched = applyJsonPatch(current as Json, body);
    else if (!isObject(body)) throw badRequest('the patch is not a JSON object');
    else if (mediaType === 'application/merge-patch+json') patched = mergePatch(current as Json, body);
    else patched = strategicMergePatch(current as Json, body, t.type.mergeKeys ?? {}, '');
    if (!isObject(patched) || !isObject(patched.metadata)) throw invalidPatch('the patched object has no metadata');
    const meta = patched.metadata;
    if (patched.apiVersion !== current.apiVersion || patched.kind !== current.kind || meta.name !== current.metadata.name || meta.namespace !== current.metadata.namespace) {
      throw badRequest('the patch changes apiVersion, kind, name or namespace');
    }
    if (meta.resourceVersion !== current.metadata.resourceVersion) {
      // A resourceVersion in the patch is a precondition.
      throw new ApiError(
        statusObject(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(t.resource, t.type)} "${t.name}": the object has been modified; please apply your changes to the latest version and try again`, {
          name: t.name!,
          ...(t.type.group ? { group: t.type.group } : {}),
          kind: t.resource,
        }),
      );
    }
    validate(t, patched as KubeObject);
    return store(t.resource, patched as KubeObject, current);
  }

  /** The few validations a client of these resources could trip. */
  function validate(t: Target, object: KubeObject): void {
    if (t.resource !== 'mutatingwebhookconfigurations') return;
    const webhooks = Array.isArray(object.webhooks) ? object.webhooks : [];
    for (const [i, w] of webhooks.entries()) {
      const bundle = isObject(w) && isObject(w.clientConfig) ? w.clientConfig.caBundle : undefined;
      // caBundle is []byte in Go: JSON carries it as standard base64, anything else fails to decode.
      if (bundle !== undefined && (typeof bundle !== 'string' || !/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(bundle))) {
        throw new ApiError(
          statusObject(422, 'Invalid', `MutatingWebhookConfiguration.admissionregistration.k8s.io "${t.name}" is invalid: webhooks[${i}].clientConfig.caBundle: Invalid value: illegal base64 data`, {
            name: t.name!,
            group: t.type.group,
            kind: 'MutatingWebhookConfiguration',
          }),
        );
      }
    }
  }

  // --- HTTP ---

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    if (text !== '') {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    const entry: RecordedRequest = {
      method: req.method ?? '',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      contentType: req.headers['content-type'],
      authorization: req.headers.authorization,
      body,
      status: 200,
      at: Date.now(),
    };
    requests.push(entry);
    hook?.(entry);
    if (latencyMs > 0) await sleep(latencyMs, undefined, { signal: stopping.signal }).catch(() => undefined);
    if (stopping.signal.aborted) {
      req.socket.destroy();
      return;
    }
    const reply = (status: number, json: unknown) => {
      entry.status = status;
      res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Audit-Id': randomUUID() });
      res.end(JSON.stringify(json));
    };
    try {
      if (token !== undefined && req.headers.authorization !== `Bearer ${token}`) {
        throw new ApiError(statusObject(401, 'Unauthorized', 'Unauthorized'));
      }
      const t = route(entry.method, url.pathname, url.searchParams);
      authorize(t);
      if (t.verb === 'watch') return watch(t, url.searchParams, res);
      if (t.verb === 'list') return reply(200, list(t));
      if (t.verb === 'patch') return reply(200, patch(t, entry.contentType, text));
      const object = objects.get(keyOf(t.resource, t.namespace, t.name!));
      if (!object) throw notFound(t);
      reply(200, object);
    } catch (err) {
      if (err instanceof ApiError) reply(err.status.code, err.status);
      else reply(500, statusObject(500, 'InternalError', `kube-api stand-in: ${(err as Error).message}`));
    }
  }

  const listener = (req: IncomingMessage, res: ServerResponse) => void handle(req, res);
  const server: Server = certificate ? createHttpsServer({ key: certificate.key, cert: certificate.cert }, listener) : createHttpServer(listener);
  // Raw sockets, TLS handshakes included: stop() ends them all, whatever state they are in.
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = (server.address() as AddressInfo).port;
  const url = `${certificate ? 'https' : 'http'}://127.0.0.1:${port}`;

  return {
    url,
    port,
    caPem: certificate?.cert,
    token,
    requests,
    kubeconfig() {
      const cluster = certificate
        ? { server: url, 'certificate-authority-data': Buffer.from(certificate.cert).toString('base64') }
        : { server: url, 'insecure-skip-tls-verify': true };
      return JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'stand-in', cluster }],
        users: [{ name: 'webhook', user: token === undefined ? {} : { token } }],
        contexts: [{ name: 'stand-in', context: { cluster: 'stand-in', user: 'webhook' } }],
        'current-context': 'stand-in',
      });
    },
    inClusterFiles(root, namespace = 'shoal-system') {
      const dir = join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'token'), token ?? '');
      writeFileSync(join(dir, 'ca.crt'), certificate?.cert ?? '');
      writeFileSync(join(dir, 'namespace'), namespace);
      return { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(port) };
    },
    put,
    remove,
    get(resource, namespace, name) {
      const object = objects.get(keyOf(resource, namespace, name));
      return object && clone(object);
    },
    namespace(name, annotations) {
      return put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, ...(annotations ? { annotations } : {}) } });
    },
    pullSecret(namespace, name, auths, type = 'kubernetes.io/dockerconfigjson') {
      const dockercfg = type === 'kubernetes.io/dockercfg';
      const content = JSON.stringify(dockercfg ? auths : { auths });
      return put({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name, namespace },
        data: { [dockercfg ? '.dockercfg' : '.dockerconfigjson']: Buffer.from(content).toString('base64') },
        type,
      });
    },
    serviceAccount(namespace, name, imagePullSecrets = []) {
      return put({
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name, namespace },
        ...(imagePullSecrets.length > 0 ? { imagePullSecrets: imagePullSecrets.map((n) => ({ name: n })) } : {}),
      });
    },
    deny(rule) {
      denied.push(rule);
      return () => {
        const at = denied.indexOf(rule);
        if (at >= 0) denied.splice(at, 1);
      };
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    onRequest(h) {
      hook = h;
    },
    dropWatches(how = 'end') {
      for (const w of watchers) {
        watchers.delete(w);
        if (how === 'end') w.res.end();
        else w.res.socket?.destroy();
      }
    },
    compact() {
      compactedBefore = revision;
      history.length = 0;
    },
    bookmark() {
      for (const w of watchers) {
        const type = RESOURCES[w.resource]!;
        const apiVersion = type.group ? `${type.group}/${type.version}` : type.version;
        if (w.bookmarks) send(w, 'BOOKMARK', { kind: type.kind, apiVersion, metadata: { resourceVersion: String(revision) } });
      }
    },
    watchCount(resource) {
      return [...watchers].filter((w) => resource === undefined || w.resource === resource).length;
    },
    resourceVersion() {
      return String(revision);
    },
    async stop() {
      stopping.abort();
      for (const w of watchers) w.res.end();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
    },
  };
}

// --- patches ---

function parsePointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw badRequest(`invalid JSON pointer: "${path}"`);
  return path
    .slice(1)
    .split('/')
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function arrayIndex(token: string, length: number, forAdd: boolean): number | undefined {
  if (forAdd && token === '-') return length;
  if (!/^(?:0|[1-9]\d*)$/.test(token)) return undefined;
  const i = Number(token);
  return i < length || (forAdd && i === length) ? i : undefined;
}

/** RFC 6902, with the apiserver's answers: a malformed patch is 400, an operation that does not apply 422. */
function applyJsonPatch(document: Json, patch: Json): Json {
  if (!Array.isArray(patch)) throw badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let doc = clone(document);
  const parentOf = (op: string, path: string): { parent: Json; key: string } => {
    const tokens = parsePointer(path);
    const key = tokens.pop();
    if (key === undefined) throw invalidPatch(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
    let parent: Json = doc;
    for (const token of tokens) {
      const next: Json | undefined = Array.isArray(parent) ? parent[arrayIndex(token, parent.length, false) ?? -1] : isObject(parent) ? parent[token] : undefined;
      if (next === undefined) throw invalidPatch(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
      parent = next;
    }
    return { parent, key };
  };
  const read = (op: string, path: string): Json => {
    if (path === '') return doc;
    const { parent, key } = parentOf(op, path);
    const value = Array.isArray(parent) ? parent[arrayIndex(key, parent.length, false) ?? -1] : isObject(parent) ? parent[key] : undefined;
    if (value === undefined) throw invalidPatch(`${op} operation does not apply: doc is missing key: ${path}: missing value`);
    return value;
  };
  const add = (op: string, path: string, value: Json) => {
    if (path === '') {
      doc = value;
      return;
    }
    const { parent, key } = parentOf(op, path);
    if (Array.isArray(parent)) {
      const i = arrayIndex(key, parent.length, true);
      if (i === undefined) throw invalidPatch(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
      parent.splice(i, 0, value);
    } else if (isObject(parent)) parent[key] = value;
    else throw invalidPatch(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
  };
  const removeAt = (op: string, path: string): Json => {
    const value = read(op, path);
    const { parent, key } = parentOf(op, path);
    if (Array.isArray(parent)) parent.splice(Number(key), 1);
    else if (isObject(parent)) delete parent[key];
    return value;
  };
  for (const operation of patch) {
    if (!isObject(operation) || typeof operation.op !== 'string' || typeof operation.path !== 'string') throw badRequest('invalid JSON Patch operation');
    const { op, path } = operation;
    const from = typeof operation.from === 'string' ? operation.from : undefined;
    const needsValue = op === 'add' || op === 'replace' || op === 'test';
    if (needsValue && operation.value === undefined) throw badRequest(`Unexpected kind: ${op} operation has no value`);
    if ((op === 'move' || op === 'copy') && from === undefined) throw badRequest(`Unexpected kind: ${op} operation has no from`);
    const value = clone(operation.value as Json);
    switch (op) {
      case 'add':
        add(op, path, value);
        break;
      case 'remove':
        removeAt(op, path);
        break;
      case 'replace':
        removeAt(op, path);
        add(op, path, value);
        break;
      case 'move':
        add(op, path, removeAt(op, from!));
        break;
      case 'copy':
        add(op, path, clone(read(op, from!)));
        break;
      case 'test':
        if (!isDeepStrictEqual(read(op, path), value)) throw invalidPatch(`testing value ${path} failed: test failed`);
        break;
      default:
        throw badRequest(`Unexpected kind: ${op}`);
    }
  }
  return doc;
}

/** RFC 7386: objects merge, null deletes, anything else (lists too) replaces. */
function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const result: JsonObject = isObject(target) ? clone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key] ?? null, value);
  }
  return result;
}

/**
 * Strategic merge patch, for the lists these resources merge by key (e.g. webhooks
 * by name) and the `$patch: delete` directive on their items; other lists replace.
 */
function strategicMergePatch(target: Json, patch: Json, mergeKeys: Record<string, string>, path: string): Json {
  if (!isObject(patch)) return clone(patch);
  const result: JsonObject = isObject(target) ? clone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$')) throw new ApiError(statusObject(500, 'InternalError', `kube-api stand-in: directive ${key} is not implemented`));
    const mergeKey = mergeKeys[`${path}${key}`];
    if (value === null) delete result[key];
    else if (mergeKey !== undefined && Array.isArray(value)) {
      const items = Array.isArray(result[key]) ? result[key] : [];
      for (const item of value) {
        if (!isObject(item) || item[mergeKey] === undefined) throw badRequest(`map: ${JSON.stringify(item)} does not contain declared merge key: ${mergeKey}`);
        const at = items.findIndex((old) => isObject(old) && isDeepStrictEqual(old[mergeKey], item[mergeKey]));
        const { $patch: directive, ...rest } = item;
        if (directive === 'delete') {
          if (at >= 0) items.splice(at, 1);
        } else if (directive !== undefined) {
          throw new ApiError(statusObject(500, 'InternalError', `kube-api stand-in: $patch: ${JSON.stringify(directive)} is not implemented`));
        } else if (at >= 0) items[at] = strategicMergePatch(items[at]!, rest, mergeKeys, `${path}${key}[].`);
        else items.push(rest);
      }
      result[key] = items;
    } else result[key] = strategicMergePatch(result[key] ?? null, value, mergeKeys, `${path}${key}.`);
  }
  return result;
}
