/**
 * The Kubernetes API stand-in, proven against the real client: @kubernetes/client-node
 * reads, lists, watches and patches through it exactly as it would against a cluster,
 * and sees the same answers (objects, Status errors, watch events).
 */
import assert from 'node:assert/strict';
import {
  AdmissionregistrationV1Api,
  ApiException,
  CoreV1Api,
  KubeConfig,
  ListWatch,
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type V1Namespace,
} from '@kubernetes/client-node';
import { startKubeApi, type KubeApi } from '../harness/kube-api.ts';
import { waitUntil } from '../harness/procs.ts';

function until(check: () => boolean, what: string): Promise<void> {
  return waitUntil(() => Promise.resolve(check()), { what, timeoutMs: 5000 });
}

function configFor(api: KubeApi, token?: string): KubeConfig {
  const kc = new KubeConfig();
  const config = JSON.parse(api.kubeconfig()) as { users: { user: { token?: string } }[] };
  if (token !== undefined) config.users[0]!.user.token = token;
  kc.loadFromString(JSON.stringify(config));
  return kc;
}

/** The Status an ApiException carries (client-node keeps the body as text). */
function statusOf(err: unknown): { code: number; reason: string; message: string; details?: unknown } {
  assert.ok(err instanceof ApiException, `not an ApiException: ${String(err)}`);
  return JSON.parse(err.body as string) as { code: number; reason: string; message: string };
}

interface WatchEvent {
  type: string;
  object: { kind?: string; code?: number; reason?: string; metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> } };
}

/** A client-node watch that records its events and how it ended. */
async function startWatch(kc: KubeConfig, path: string, query: Record<string, string | boolean>) {
  const events: WatchEvent[] = [];
  let ended: { err: unknown } | undefined;
  const controller = await new Watch(kc).watch(
    path,
    query,
    (type, object: WatchEvent['object']) => events.push({ type, object }),
    (err) => (ended = { err }),
  );
  return { events, controller, ended: () => ended };
}

const WEBHOOKS = [
  {
    name: 'pin.shoal.dev',
    admissionReviewVersions: ['v1'],
    sideEffects: 'None',
    clientConfig: { service: { name: 'shoal-webhook', namespace: 'shoal-system', path: '/mutate', port: 443 } },
  },
  {
    name: 'pin-workloads.shoal.dev',
    admissionReviewVersions: ['v1'],
    sideEffects: 'None',
    clientConfig: { service: { name: 'shoal-webhook', namespace: 'shoal-system', path: '/mutate', port: 443 }, caBundle: 'b2xk' },
  },
];

describe('kube-api stand-in, through @kubernetes/client-node', function () {
  this.timeout(20_000);
  let api: KubeApi;
  let kc: KubeConfig;
  let core: CoreV1Api;
  let admission: AdmissionregistrationV1Api;

  beforeEach(async function () {
    api = await startKubeApi();
    kc = configFor(api);
    core = kc.makeApiClient(CoreV1Api);
    admission = kc.makeApiClient(AdmissionregistrationV1Api);
  });

  afterEach(async function () {
    await api.stop();
  });

  describe('objects', function () {
    it('serves a dockerconfigjson Secret with full metadata, over TLS with the bearer token', async function () {
      api.pullSecret('team-a', 'regcred', { 'registry.example.com': { auth: Buffer.from('u:p').toString('base64') } });
      const secret = await core.readNamespacedSecret({ name: 'regcred', namespace: 'team-a' });
      assert.equal(secret.apiVersion, 'v1');
      assert.equal(secret.kind, 'Secret');
      assert.equal(secret.type, 'kubernetes.io/dockerconfigjson');
      assert.equal(secret.metadata?.name, 'regcred');
      assert.equal(secret.metadata?.namespace, 'team-a');
      assert.match(secret.metadata?.uid ?? '', /^[0-9a-f-]{36}$/);
      assert.match(secret.metadata?.resourceVersion ?? '', /^\d+$/);
      assert.ok(secret.metadata?.creationTimestamp instanceof Date);
      const content = JSON.parse(Buffer.from(secret.data?.['.dockerconfigjson'] ?? '', 'base64').toString()) as unknown;
      assert.deepEqual(content, { auths: { 'registry.example.com': { auth: 'dTpw' } } });
      const request = api.requests.at(-1)!;
      assert.equal(request.method, 'GET');
      assert.equal(request.path, '/api/v1/namespaces/team-a/secrets/regcred');
      assert.equal(request.authorization, 'Bearer stand-in-token');
    });

    it('serves a dockercfg Secret: the bare auths map under .dockercfg', async function () {
      api.pullSecret('team-a', 'legacy', { 'https://index.docker.io/v1/': { auth: 'dTpw' } }, 'kubernetes.io/dockercfg');
      const secret = await core.readNamespacedSecret({ name: 'legacy', namespace: 'team-a' });
      assert.equal(secret.type, 'kubernetes.io/dockercfg');
      assert.deepEqual(JSON.parse(Buffer.from(secret.data?.['.dockercfg'] ?? '', 'base64').toString()), { 'https://index.docker.io/v1/': { auth: 'dTpw' } });
    });

    it('serves a ServiceAccount with its imagePullSecrets', async function () {
      api.serviceAccount('team-a', 'builder', ['one', 'two']);
      const sa = await core.readNamespacedServiceAccount({ name: 'builder', namespace: 'team-a' });
      assert.equal(sa.kind, 'ServiceAccount');
      assert.deepEqual(
        sa.imagePullSecrets?.map((s) => s.name),
        ['one', 'two'],
      );
    });

    it('answers 404 with a NotFound Status', async function () {
      const err: unknown = await core.readNamespacedSecret({ name: 'nope', namespace: 'team-a' }).catch((e: unknown) => e);
      assert.equal((err as ApiException<unknown>).code, 404);
      assert.deepEqual(statusOf(err), {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'secrets "nope" not found',
        reason: 'NotFound',
        details: { name: 'nope', kind: 'secrets' },
        code: 404,
      });
    });

    it('answers 401 to a wrong token, before anything else', async function () {
      const bad = configFor(api, 'wrong').makeApiClient(CoreV1Api);
      const err: unknown = await bad.readNamespacedSecret({ name: 'nope', namespace: 'team-a' }).catch((e: unknown) => e);
      assert.ok(err instanceof ApiException);
      assert.equal(err.code, 401);
    });

    it('answers 403 with a Forbidden Status for a denied request, even for a missing object', async function () {
      api.deny({ verb: 'get', resource: 'secrets', namespace: 'locked' });
      api.pullSecret('locked', 'regcred', {});
      for (const name of ['regcred', 'missing']) {
        const err: unknown = await core.readNamespacedSecret({ name, namespace: 'locked' }).catch((e: unknown) => e);
        const status = statusOf(err);
        assert.equal(status.code, 403);
        assert.equal(status.reason, 'Forbidden');
        assert.equal(
          status.message,
          `secrets "${name}" is forbidden: User "system:serviceaccount:shoal-system:shoal-webhook" cannot get resource "secrets" in API group "" in the namespace "locked"`,
        );
      }
      api.pullSecret('open', 'regcred', {});
      assert.equal((await core.readNamespacedSecret({ name: 'regcred', namespace: 'open' })).metadata?.name, 'regcred');
    });

    it('allows only what its RBAC rules allow, resourceNames included', async function () {
      await api.stop();
      api = await startKubeApi({
        rules: [
          { apiGroups: [''], resources: ['namespaces'], verbs: ['list', 'watch'] },
          { apiGroups: ['admissionregistration.k8s.io'], resources: ['mutatingwebhookconfigurations'], verbs: ['get'], resourceNames: ['shoal'] },
        ],
      });
      kc = configFor(api);
      core = kc.makeApiClient(CoreV1Api);
      admission = kc.makeApiClient(AdmissionregistrationV1Api);
      api.namespace('a');
      api.put({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: { name: 'shoal' }, webhooks: [] });
      api.put({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: { name: 'other' }, webhooks: [] });
      assert.equal((await core.listNamespace()).items.length, 1);
      assert.equal((await admission.readMutatingWebhookConfiguration({ name: 'shoal' })).metadata?.name, 'shoal');
      const cases: [string, () => Promise<unknown>][] = [
        ['namespace get', () => core.readNamespace({ name: 'a' })],
        ['other webhook config', () => admission.readMutatingWebhookConfiguration({ name: 'other' })],
        ['patch', () => admission.patchMutatingWebhookConfiguration({ name: 'shoal', body: [] })],
      ];
      for (const [what, call] of cases) {
        const err: unknown = await call().catch((e: unknown) => e);
        assert.equal(statusOf(err).code, 403, what);
      }
      const err: unknown = await core.listNamespacedSecret({ namespace: 'a' }).catch((e: unknown) => e);
      assert.equal(
        statusOf(err).message,
        'secrets is forbidden: User "system:serviceaccount:shoal-system:shoal-webhook" cannot list resource "secrets" in API group "" in the namespace "a"',
      );
    });

    it('lists namespaces with the list resourceVersion, items without apiVersion/kind', async function () {
      api.namespace('b', { 'shoal.dev/resolve': 'upstream' });
      api.namespace('a');
      const list = await core.listNamespace();
      assert.equal(list.kind, 'NamespaceList');
      assert.equal(list.metadata?.resourceVersion, api.resourceVersion());
      assert.deepEqual(
        list.items.map((n) => n.metadata?.name),
        ['a', 'b'],
      );
      assert.equal(list.items[0]!.kind, undefined);
      assert.deepEqual(list.items[1]!.metadata?.annotations, { 'shoal.dev/resolve': 'upstream' });
      assert.deepEqual(list.items[1]!.metadata?.labels, { 'kubernetes.io/metadata.name': 'b' });
      assert.equal(list.items[1]!.status?.phase, 'Active');
    });
  });

  describe('watch', function () {
    it('streams ADDED, MODIFIED and DELETED after the resourceVersion it starts from', async function () {
      api.namespace('before');
      const { metadata } = await core.listNamespace();
      const w = await startWatch(kc, '/api/v1/namespaces', { resourceVersion: metadata!.resourceVersion!, allowWatchBookmarks: true });
      api.namespace('a');
      api.namespace('a', { note: 'x' });
      api.remove('namespaces', undefined, 'a');
      await until(() => w.events.length === 3, 'three events');
      assert.deepEqual(
        w.events.map((e) => [e.type, e.object.kind, e.object.metadata?.name]),
        [
          ['ADDED', 'Namespace', 'a'],
          ['MODIFIED', 'Namespace', 'a'],
          ['DELETED', 'Namespace', 'a'],
        ],
      );
      assert.deepEqual(w.events[1]!.object.metadata?.annotations, { note: 'x' });
      assert.equal(w.events[2]!.object.metadata?.resourceVersion, api.resourceVersion());
      const request = api.requests.find((r) => r.query.watch === 'true')!;
      assert.equal(request.path, '/api/v1/namespaces');
      assert.deepEqual(request.query, { watch: 'true', resourceVersion: metadata!.resourceVersion!, allowWatchBookmarks: 'true' });
      w.controller.abort();
    });

    it('replays what happened between the list and the watch', async function () {
      const { metadata } = await core.listNamespace();
      api.namespace('early');
      const w = await startWatch(kc, '/api/v1/namespaces', { resourceVersion: metadata!.resourceVersion! });
      await until(() => w.events.length === 1, 'the replayed event');
      assert.equal(w.events[0]!.object.metadata?.name, 'early');
      w.controller.abort();
    });

    it('starts with synthetic ADDED events when no resourceVersion is given', async function () {
      api.namespace('a');
      api.namespace('b');
      const w = await startWatch(kc, '/api/v1/namespaces', {});
      await until(() => w.events.length === 2, 'two events');
      assert.deepEqual(
        w.events.map((e) => e.type),
        ['ADDED', 'ADDED'],
      );
      w.controller.abort();
    });

    it('sends BOOKMARKs only to watches that allow them', async function () {
      const rv = api.resourceVersion();
      const withBookmarks = await startWatch(kc, '/api/v1/namespaces', { resourceVersion: rv, allowWatchBookmarks: true });
      const without = await startWatch(kc, '/api/v1/namespaces', { resourceVersion: rv });
      await until(() => api.watchCount('namespaces') === 2, 'two watches');
      api.bookmark();
      await until(() => withBookmarks.events.length === 1, 'a bookmark');
      assert.deepEqual(withBookmarks.events[0], { type: 'BOOKMARK', object: { kind: 'Namespace', apiVersion: 'v1', metadata: { resourceVersion: rv } } });
      assert.equal(without.events.length, 0);
      withBookmarks.controller.abort();
      without.controller.abort();
    });

    it('answers a compacted resourceVersion with a 410 Expired ERROR event and ends the watch', async function () {
      const rv = api.resourceVersion();
      api.namespace('a');
      api.compact();
      const w = await startWatch(kc, '/api/v1/namespaces', { resourceVersion: rv });
      await until(() => w.ended() !== undefined, 'the watch to end');
      assert.equal(w.events.length, 1);
      assert.equal(w.events[0]!.type, 'ERROR');
      assert.equal(w.events[0]!.object.code, 410);
      assert.equal(w.events[0]!.object.reason, 'Expired');
      assert.equal(w.ended()!.err, null);
      assert.equal(api.requests.at(-1)!.status, 200);
    });

    it('ends watches cleanly or drops them, as the client sees it', async function () {
      const clean = await startWatch(kc, '/api/v1/namespaces', { resourceVersion: api.resourceVersion() });
      await until(() => api.watchCount() === 1, 'a watch');
      api.dropWatches('end');
      await until(() => clean.ended() !== undefined, 'the end');
      assert.equal(clean.ended()!.err, null);

      const dropped = await startWatch(kc, '/api/v1/namespaces', { resourceVersion: api.resourceVersion() });
      await until(() => api.watchCount() === 1, 'a watch');
      api.dropWatches('destroy');
      await until(() => dropped.ended() !== undefined, 'the drop');
      assert.ok(dropped.ended()!.err instanceof Error);
    });

    it('feeds client-node ListWatch (informer) too', async function () {
      api.namespace('a');
      const informer = new ListWatch<V1Namespace>('/api/v1/namespaces', new Watch(kc), () => core.listNamespace(), false);
      const seen: string[] = [];
      informer.on('add', (n) => seen.push(`add ${n.metadata?.name}`));
      informer.on('update', (n) => seen.push(`update ${n.metadata?.name}`));
      informer.on('delete', (n) => seen.push(`delete ${n.metadata?.name}`));
      await informer.start();
      api.namespace('b');
      api.namespace('a', { x: 'y' });
      api.remove('namespaces', undefined, 'b');
      await until(() => seen.length === 4, 'four callbacks');
      assert.deepEqual(seen, ['add a', 'add b', 'update a', 'delete b']);
      assert.deepEqual(informer.get('a')?.metadata?.annotations, { x: 'y' });
      await informer.stop();
    });
  });

  describe('patch', function () {
    beforeEach(function () {
      api.put({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: { name: 'shoal' }, webhooks: WEBHOOKS });
    });

    it('applies JSON Patch, the content type client-node sends by default, and bumps generation', async function () {
      const before = await admission.readMutatingWebhookConfiguration({ name: 'shoal' });
      assert.equal(before.metadata?.generation, 1);
      const body = [
        { op: 'test', path: '/webhooks/0/name', value: 'pin.shoal.dev' },
        { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: 'bmV3' },
        { op: 'replace', path: '/webhooks/1/clientConfig/caBundle', value: 'bmV3' },
      ];
      const after = await admission.patchMutatingWebhookConfiguration({ name: 'shoal', body });
      assert.deepEqual(
        after.webhooks?.map((w) => w.clientConfig.caBundle),
        ['bmV3', 'bmV3'],
      );
      assert.equal(after.metadata?.generation, 2);
      assert.notEqual(after.metadata?.resourceVersion, before.metadata?.resourceVersion);
      const request = api.requests.at(-1)!;
      assert.equal(request.method, 'PATCH');
      assert.equal(request.contentType, 'application/json-patch+json');
      assert.deepEqual(request.body, body);
      assert.equal(api.get('mutatingwebhookconfigurations', undefined, 'shoal')?.metadata.generation, 2);
    });

    it('answers 422 Invalid when a JSON Patch operation does not apply, and changes nothing', async function () {
      const cases = [
        [{ op: 'test', path: '/webhooks/0/name', value: 'someone-else' }],
        [{ op: 'replace', path: '/webhooks/0/clientConfig/caBundle', value: 'bmV3' }],
        [{ op: 'add', path: '/webhooks/2/clientConfig/caBundle', value: 'bmV3' }],
      ];
      for (const body of cases) {
        const err: unknown = await admission.patchMutatingWebhookConfiguration({ name: 'shoal', body }).catch((e: unknown) => e);
        const status = statusOf(err);
        assert.equal(status.code, 422, JSON.stringify(body));
        assert.equal(status.reason, 'Invalid');
        assert.equal(status.message, 'the server rejected our request due to an error in our request');
      }
      assert.equal(api.get('mutatingwebhookconfigurations', undefined, 'shoal')?.metadata.generation, 1);
    });

    it('rejects a caBundle that is not base64 with 422', async function () {
      const body = [{ op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: '-----BEGIN CERTIFICATE-----' }];
      const err: unknown = await admission.patchMutatingWebhookConfiguration({ name: 'shoal', body }).catch((e: unknown) => e);
      assert.equal(statusOf(err).code, 422);
    });

    it('merges webhooks by name under a strategic merge patch', async function () {
      const body = { webhooks: [{ name: 'pin-workloads.shoal.dev', clientConfig: { caBundle: 'bmV3' } }] };
      const after = await admission.patchMutatingWebhookConfiguration(
        { name: 'shoal', body },
        setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
      );
      assert.equal(api.requests.at(-1)!.contentType, 'application/strategic-merge-patch+json');
      assert.equal(after.webhooks?.length, 2);
      assert.equal(after.webhooks?.[1]?.clientConfig.caBundle, 'bmV3');
      assert.equal(after.webhooks?.[1]?.clientConfig.service?.name, 'shoal-webhook');
    });

    it('replaces the whole webhooks list under a JSON merge patch (RFC 7386)', async function () {
      const body = { webhooks: [{ name: 'pin.shoal.dev', clientConfig: { caBundle: 'bmV3' } }] };
      const after = await admission.patchMutatingWebhookConfiguration({ name: 'shoal', body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
      assert.equal(api.requests.at(-1)!.contentType, 'application/merge-patch+json');
      assert.equal(after.webhooks?.length, 1);
      assert.equal(after.webhooks?.[0]?.clientConfig.service, undefined);
    });

    it('answers 409 Conflict when the patch carries a stale resourceVersion', async function () {
      const body = { metadata: { resourceVersion: '1' }, webhooks: [] };
      const err: unknown = await admission
        .patchMutatingWebhookConfiguration({ name: 'shoal', body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
        .catch((e: unknown) => e);
      assert.equal(statusOf(err).reason, 'Conflict');
    });

    it('answers 415 to a media type that is no patch format', async function () {
      const err: unknown = await admission
        .patchMutatingWebhookConfiguration({ name: 'shoal', body: {} }, setHeaderOptions('Content-Type', 'application/json'))
        .catch((e: unknown) => e);
      assert.equal(statusOf(err).code, 415);
      assert.equal(statusOf(err).reason, 'UnsupportedMediaType');
    });

    it('answers 404 for a configuration that does not exist', async function () {
      const err: unknown = await admission.patchMutatingWebhookConfiguration({ name: 'missing', body: [] }).catch((e: unknown) => e);
      assert.deepEqual(statusOf(err).details, { name: 'missing', group: 'admissionregistration.k8s.io', kind: 'mutatingwebhookconfigurations' });
    });
  });
});
