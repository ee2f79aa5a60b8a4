/**
 * createKubeAccess: where its config comes from (none, --kubeconfig, the pod's
 * service account), and that the rules in rbac.ts are all it needs.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startKubeApi, type KubeApi } from '../../hack/harness/kube-api.ts';
import { createKubeAccess } from './access.ts';
import { webhookPolicyRules } from './rbac.ts';
import { captureLogger, tempDir, until, writeKubeconfig } from './testing.ts';

const ENV = ['KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT'] as const;

describe('createKubeAccess', function () {
  this.timeout(10_000);
  let api: KubeApi | undefined;
  const saved = Object.fromEntries(ENV.map((k) => [k, process.env[k]]));

  beforeEach(function () {
    for (const k of ENV) delete process.env[k];
  });

  afterEach(async function () {
    for (const k of ENV) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    await api?.stop();
    api = undefined;
  });

  it('returns undefined, saying so, without --kubeconfig and outside a pod', function () {
    const { logger, lines } = captureLogger();
    assert.equal(createKubeAccess({ logger, inClusterRoot: tempDir('no-sa-') }), undefined);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.level, 'info');
    assert.match(lines[0]!.msg, /pod annotations only/);
  });

  it('returns undefined with the service env but no token file', function () {
    process.env.KUBERNETES_SERVICE_HOST = '127.0.0.1';
    process.env.KUBERNETES_SERVICE_PORT = '443';
    assert.equal(createKubeAccess({ logger: captureLogger().logger, inClusterRoot: tempDir('no-sa-') }), undefined);
  });

  it('uses the in-cluster service account: token and CA files, service env', async function () {
    api = await startKubeApi({ token: 'pod-token' });
    const root = tempDir('sa-');
    Object.assign(process.env, api.inClusterFiles(root));
    const { logger, lines } = captureLogger();
    const access = createKubeAccess({ logger, inClusterRoot: root });
    assert.ok(access);
    try {
      await until(() => access.ready, 'ready');
      assert.equal(api.requests[0]!.authorization, 'Bearer pod-token');
      const info = lines.find((l) => l.msg === 'Kubernetes API')!;
      assert.equal(info.server, api.url);
      assert.equal(info.source, 'in-cluster');
    } finally {
      await access.close();
    }
  });

  it('throws, saying which file, when --kubeconfig cannot be loaded', function () {
    const dir = tempDir('kubeconfig-');
    assert.throws(() => createKubeAccess({ kubeconfig: join(dir, 'missing'), logger: captureLogger().logger }), /cannot load kubeconfig .*missing/);
    writeFileSync(join(dir, 'empty'), JSON.stringify({ apiVersion: 'v1', kind: 'Config', clusters: [], users: [], contexts: [] }));
    assert.throws(() => createKubeAccess({ kubeconfig: join(dir, 'empty'), logger: captureLogger().logger }), /no current context/);
  });

  it('needs no more than the rules in rbac.ts', async function () {
    api = await startKubeApi({ rules: webhookPolicyRules('shoal') });
    api.namespace('team-a', { 'shoal.dev/resolve': 'upstream' });
    api.serviceAccount('team-a', 'default', ['sa-secret']);
    api.pullSecret('team-a', 'regcred', { 'registry.example.com': { username: 'u', password: 'p' } });
    api.pullSecret('team-a', 'sa-secret', { 'registry.example.com': { username: 'v', password: 'q' } });
    api.put({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name: 'shoal' },
      webhooks: [{ name: 'pods.shoal.dev', clientConfig: { service: { name: 'shoal-webhook', namespace: 'shoal-system' } } }],
    });
    const access = createKubeAccess({ kubeconfig: writeKubeconfig(api), logger: captureLogger().logger })!;
    try {
      await until(() => access.ready && api!.watchCount('namespaces') === 1, 'listed and watching');
      assert.deepEqual(access.namespaceAnnotations('team-a'), { 'shoal.dev/resolve': 'upstream' });
      const refs = { namespace: 'team-a', serviceAccountName: undefined, imagePullSecrets: ['regcred'] };
      assert.equal((await access.pullCredentials(refs, 'registry.example.com', new AbortController().signal)).length, 2);
      assert.equal(await access.publishCaBundle('shoal', 'PEM'), 'patched');
      assert.deepEqual(
        api.requests.filter((r) => r.status === 403),
        [],
      );
      const verbs = new Set(api.requests.map((r) => `${r.method} ${r.path.replace(/\/namespaces\/team-a/, '/namespaces/{ns}')}${r.query.watch ? ' (watch)' : ''}`));
      assert.deepEqual([...verbs].sort(), [
        'GET /api/v1/namespaces',
        'GET /api/v1/namespaces (watch)',
        'GET /api/v1/namespaces/{ns}/secrets/regcred',
        'GET /api/v1/namespaces/{ns}/secrets/sa-secret',
        'GET /api/v1/namespaces/{ns}/serviceaccounts/default',
        'GET /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/shoal',
        'PATCH /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/shoal',
      ]);
    } finally {
      await access.close();
    }
  });
});
