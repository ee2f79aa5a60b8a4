/**
 * Pull credentials through client-node against the API stand-in, configured from a
 * kubeconfig file as `--kubeconfig` would be.
 */
import assert from 'node:assert/strict';
import { startKubeApi, type KubeApi } from '../../hack/harness/kube-api.ts';
import { createKubeAccess, type ClusterAccess } from './access.ts';
import { captureLogger, writeKubeconfig, type LogLine } from './testing.ts';
import type { PodCredentialRefs } from './types.ts';

const REGISTRY = 'registry.example.com';
const auth = (user: string, password: string) => ({ auth: Buffer.from(`${user}:${password}`).toString('base64') });
const basic = (username: string, password: string) => ({ kind: 'basic', username, password });

describe('KubeAccess.pullCredentials', function () {
  this.timeout(10_000);
  let api: KubeApi;
  let access: ClusterAccess;
  let lines: LogLine[];
  let logText: () => string;
  const never = new AbortController().signal;

  const pod = (refs: Partial<PodCredentialRefs> = {}): PodCredentialRefs => ({
    namespace: 'team-a',
    serviceAccountName: undefined,
    imagePullSecrets: [],
    ...refs,
  });
  const gets = (resource: string) => api.requests.filter((r) => r.method === 'GET' && r.path.includes(`/${resource}/`)).map((r) => r.path);

  async function start(init: { cacheTtlMs?: number } = {}) {
    api = await startKubeApi();
    const captured = captureLogger();
    lines = captured.lines;
    logText = captured.text;
    access = createKubeAccess({ kubeconfig: writeKubeconfig(api), logger: captured.logger, ...init })!;
    assert.ok(access);
  }

  beforeEach(async function () {
    await start();
  });

  afterEach(async function () {
    await access.close();
    await api.stop();
  });

  it('reads a dockerconfigjson imagePullSecret', async function () {
    api.pullSecret('team-a', 'regcred', { [REGISTRY]: auth('alice', 's3cret'), 'other.example.com': auth('bob', 'x') });
    const creds = await access.pullCredentials(pod({ imagePullSecrets: ['regcred'] }), REGISTRY, never);
    assert.deepEqual(creds, [basic('alice', 's3cret')]);
    assert.deepEqual(gets('secrets'), ['/api/v1/namespaces/team-a/secrets/regcred']);
  });

  it('reads a dockercfg Secret', async function () {
    api.pullSecret('team-a', 'legacy', { [`https://${REGISTRY}/v1/`]: { username: 'carol', password: 'pw' } }, 'kubernetes.io/dockercfg');
    const creds = await access.pullCredentials(pod({ imagePullSecrets: ['legacy'] }), REGISTRY, never);
    assert.deepEqual(creds, [basic('carol', 'pw')]);
  });

  it("reads the service account's imagePullSecrets, `default` when the pod names none", async function () {
    api.serviceAccount('team-a', 'default', ['from-default']);
    api.serviceAccount('team-a', 'builder', ['from-builder']);
    api.pullSecret('team-a', 'from-default', { [REGISTRY]: auth('d', '1') });
    api.pullSecret('team-a', 'from-builder', { [REGISTRY]: { identitytoken: 'tok' } });
    assert.deepEqual(await access.pullCredentials(pod(), REGISTRY, never), [basic('d', '1')]);
    assert.deepEqual(await access.pullCredentials(pod({ serviceAccountName: 'builder' }), REGISTRY, never), [{ kind: 'identity-token', token: 'tok' }]);
    assert.deepEqual(gets('serviceaccounts'), ['/api/v1/namespaces/team-a/serviceaccounts/default', '/api/v1/namespaces/team-a/serviceaccounts/builder']);
  });

  it("puts the pod's Secrets first, in order, then the service account's; each Secret and credential once", async function () {
    api.serviceAccount('team-a', 'default', ['sa-1', 'pod-2']);
    api.pullSecret('team-a', 'pod-1', { [REGISTRY]: auth('p1', 'x') });
    api.pullSecret('team-a', 'pod-2', { [REGISTRY]: auth('p2', 'x') });
    api.pullSecret('team-a', 'sa-1', { [REGISTRY]: auth('s1', 'x'), [`https://${REGISTRY}`]: auth('p1', 'x') });
    const creds = await access.pullCredentials(pod({ imagePullSecrets: ['pod-1', 'pod-2', 'pod-1'] }), REGISTRY, never);
    assert.deepEqual(creds, [basic('p1', 'x'), basic('p2', 'x'), basic('s1', 'x')]);
    assert.deepEqual(gets('secrets').sort(), ['pod-1', 'pod-2', 'sa-1'].map((n) => `/api/v1/namespaces/team-a/secrets/${n}`));
  });

  it('skips a missing Secret and a missing ServiceAccount with a warning, and returns the rest', async function () {
    api.pullSecret('team-a', 'present', { [REGISTRY]: auth('ok', 'x') });
    const creds = await access.pullCredentials(pod({ imagePullSecrets: ['gone', 'present'], serviceAccountName: 'ghost' }), REGISTRY, never);
    assert.deepEqual(creds, [basic('ok', 'x')]);
    const warned = lines.filter((l) => l.level === 'warn').map((l) => `${l.msg}: ${String(l.secret ?? l.serviceAccount)} ${String(l.status)} ${String(l.reason)}`);
    assert.deepEqual(warned.sort(), ['image pull secret skipped: gone 404 NotFound', 'service account skipped: ghost 404 NotFound']);
  });

  it('skips a forbidden (403) Secret or ServiceAccount with a warning', async function () {
    api.deny({ verb: 'get', resource: 'secrets', name: 'locked' });
    api.deny({ verb: 'get', resource: 'serviceaccounts' });
    api.pullSecret('team-a', 'locked', { [REGISTRY]: auth('no', 'x') });
    api.pullSecret('team-a', 'open', { [REGISTRY]: auth('yes', 'x') });
    const creds = await access.pullCredentials(pod({ imagePullSecrets: ['locked', 'open'] }), REGISTRY, never);
    assert.deepEqual(creds, [basic('yes', 'x')]);
    const forbidden = lines.filter((l) => l.level === 'warn' && l.status === 403);
    assert.equal(forbidden.length, 2);
    assert.match(String(forbidden.find((l) => l.secret === 'locked')?.message), /cannot get resource "secrets"/);
  });

  it('ignores Secrets of other types (debug) and skips unreadable content (warning)', async function () {
    api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'opaque', namespace: 'team-a' }, type: 'Opaque', data: { password: 'eA==' } });
    api.put({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'broken', namespace: 'team-a' },
      type: 'kubernetes.io/dockerconfigjson',
      data: { '.dockerconfigjson': Buffer.from('{not json').toString('base64') },
    });
    api.pullSecret('team-a', 'good', { [REGISTRY]: auth('g', 'x') });
    const creds = await access.pullCredentials(pod({ imagePullSecrets: ['opaque', 'broken', 'good'] }), REGISTRY, never);
    assert.deepEqual(creds, [basic('g', 'x')]);
    assert.ok(lines.some((l) => l.level === 'debug' && l.secret === 'opaque' && l.type === 'Opaque'));
    assert.ok(lines.some((l) => l.level === 'warn' && l.secret === 'broken' && l.msg === 'image pull secret skipped: unreadable'));
  });

  it('makes one GET per Secret and ServiceAccount for a burst of reviews, found or not', async function () {
    api.setLatency(50);
    api.serviceAccount('team-a', 'default', ['sa-secret']);
    api.pullSecret('team-a', 'regcred', { [REGISTRY]: auth('alice', 'x') });
    api.pullSecret('team-a', 'sa-secret', { [REGISTRY]: auth('sa', 'x') });
    const refs = pod({ imagePullSecrets: ['regcred', 'missing'] });
    const burst = await Promise.all(Array.from({ length: 25 }, () => access.pullCredentials(refs, REGISTRY, never)));
    for (const creds of burst) assert.deepEqual(creds, [basic('alice', 'x'), basic('sa', 'x')]);
    await access.pullCredentials(refs, REGISTRY, never);
    assert.deepEqual(gets('secrets').sort(), ['missing', 'regcred', 'sa-secret'].map((n) => `/api/v1/namespaces/team-a/secrets/${n}`));
    assert.deepEqual(gets('serviceaccounts'), ['/api/v1/namespaces/team-a/serviceaccounts/default']);
    assert.equal(lines.filter((l) => l.secret === 'missing').length, 1, 'one warning per cache period');
  });

  it('reads again once the cache period is over, and sees the change', async function () {
    await access.close();
    await api.stop();
    await start({ cacheTtlMs: 100 });
    api.pullSecret('team-a', 'regcred', { [REGISTRY]: auth('old', 'x') });
    const refs = pod({ imagePullSecrets: ['regcred'] });
    assert.deepEqual(await access.pullCredentials(refs, REGISTRY, never), [basic('old', 'x')]);
    api.pullSecret('team-a', 'regcred', { [REGISTRY]: auth('new', 'x') });
    assert.deepEqual(await access.pullCredentials(refs, REGISTRY, never), [basic('old', 'x')]);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.deepEqual(await access.pullCredentials(refs, REGISTRY, never), [basic('new', 'x')]);
    assert.equal(gets('secrets').length, 2);
  });

  it('honours the signal: rejects with its reason, at once or while the API answers', async function () {
    const aborted = AbortSignal.abort(new Error('review over'));
    await assert.rejects(access.pullCredentials(pod({ imagePullSecrets: ['regcred'] }), REGISTRY, aborted), /review over/);
    assert.deepEqual(gets('secrets'), []);

    api.setLatency(2000);
    api.pullSecret('team-a', 'regcred', { [REGISTRY]: auth('alice', 'x') });
    const started = Date.now();
    await assert.rejects(access.pullCredentials(pod({ imagePullSecrets: ['regcred'] }), REGISTRY, AbortSignal.timeout(100)), { name: 'TimeoutError' });
    assert.ok(Date.now() - started < 1000);
  });

  it('never logs a credential', async function () {
    api.pullSecret('team-a', 'regcred', { [REGISTRY]: auth('alice', 'hunter2') });
    api.put({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'broken', namespace: 'team-a' },
      type: 'kubernetes.io/dockerconfigjson',
      data: { '.dockerconfigjson': Buffer.from(JSON.stringify({ auths: { [REGISTRY]: { auth: 'hunter2-not-base64!' } } })).toString('base64') },
    });
    await access.pullCredentials(pod({ imagePullSecrets: ['regcred', 'broken'] }), REGISTRY, never);
    assert.ok(lines.length > 0);
    assert.doesNotMatch(logText(), /hunter2/);
  });
});
