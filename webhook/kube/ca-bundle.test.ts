/** Publishing the CA bundle through client-node against the API stand-in, which applies JSON Patch as the API server does. */
import assert from 'node:assert/strict';
import { startKubeApi, type KubeApi, type KubeObject } from '../../hack/harness/kube-api.ts';
import { KubeApiError } from './api.ts';
import { createKubeAccess, type ClusterAccess } from './access.ts';
import { captureLogger, writeKubeconfig } from './testing.ts';

const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n';
const CA_BUNDLE = Buffer.from(CA_PEM).toString('base64');
const PATH = '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/shoal';

const webhook = (name: string, caBundle?: string) => ({
  name,
  admissionReviewVersions: ['v1'],
  sideEffects: 'None',
  failurePolicy: 'Ignore',
  clientConfig: { service: { name: 'shoal-webhook', namespace: 'shoal-system', path: '/mutate', port: 443 }, ...(caBundle ? { caBundle } : {}) },
  rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'] }],
});

function configuration(webhooks: ReturnType<typeof webhook>[]): KubeObject {
  return { apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: { name: 'shoal' }, webhooks };
}

describe('KubeAccess.publishCaBundle', function () {
  this.timeout(10_000);
  let api: KubeApi;
  let access: ClusterAccess;

  beforeEach(async function () {
    api = await startKubeApi();
    access = createKubeAccess({ kubeconfig: writeKubeconfig(api), logger: captureLogger().logger })!;
  });

  afterEach(async function () {
    await access.close();
    await api.stop();
  });

  const calls = () => api.requests.filter((r) => r.path.startsWith('/apis/'));

  it('reads the configuration, then sets every caBundle with one JSON Patch', async function () {
    api.put(configuration([webhook('pods.shoal.dev'), webhook('workloads.shoal.dev', 'b2xk')]));
    assert.equal(await access.publishCaBundle('shoal', CA_PEM), 'patched');
    const [read, patch, ...rest] = calls();
    assert.deepEqual([read?.method, read?.path], ['GET', PATH]);
    assert.equal(patch?.method, 'PATCH');
    assert.equal(patch.path, PATH);
    assert.equal(patch.contentType, 'application/json-patch+json');
    assert.deepEqual(patch.body, [
      { op: 'test', path: '/webhooks/0/name', value: 'pods.shoal.dev' },
      { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: CA_BUNDLE },
      { op: 'test', path: '/webhooks/1/name', value: 'workloads.shoal.dev' },
      { op: 'add', path: '/webhooks/1/clientConfig/caBundle', value: CA_BUNDLE },
    ]);
    assert.deepEqual(rest, []);
    const stored = api.get('mutatingwebhookconfigurations', undefined, 'shoal')!;
    assert.deepEqual(stored.webhooks, [webhook('pods.shoal.dev', CA_BUNDLE), webhook('workloads.shoal.dev', CA_BUNDLE)]);
  });

  it('writes nothing when every webhook already carries the CA', async function () {
    api.put(configuration([webhook('pods.shoal.dev', CA_BUNDLE)]));
    assert.equal(await access.publishCaBundle('shoal', CA_PEM), 'unchanged');
    assert.deepEqual(
      calls().map((r) => r.method),
      ['GET'],
    );
  });

  it('tries again when the webhooks changed between its read and its patch', async function () {
    api.put(configuration([webhook('pods.shoal.dev'), webhook('workloads.shoal.dev')]));
    api.onRequest((request) => {
      if (request.method !== 'PATCH') return;
      api.onRequest(undefined);
      api.put(configuration([webhook('workloads.shoal.dev'), webhook('pods.shoal.dev'), webhook('new.shoal.dev')]));
    });
    assert.equal(await access.publishCaBundle('shoal', CA_PEM), 'patched');
    assert.deepEqual(
      calls().map((r) => [r.method, r.status]),
      [
        ['GET', 200],
        ['PATCH', 422],
        ['GET', 200],
        ['PATCH', 200],
      ],
    );
    const stored = api.get('mutatingwebhookconfigurations', undefined, 'shoal')!;
    assert.deepEqual(stored.webhooks, [webhook('workloads.shoal.dev', CA_BUNDLE), webhook('pods.shoal.dev', CA_BUNDLE), webhook('new.shoal.dev', CA_BUNDLE)]);
  });

  it('throws a KubeApiError saying what failed: missing configuration, no webhooks, forbidden', async function () {
    await assert.rejects(access.publishCaBundle('shoal', CA_PEM), (err: unknown) => {
      assert.ok(err instanceof KubeApiError);
      assert.equal(err.status, 404);
      assert.equal(err.message, 'cannot read mutatingwebhookconfiguration shoal: 404 mutatingwebhookconfigurations.admissionregistration.k8s.io "shoal" not found');
      return true;
    });
    api.put(configuration([]));
    await assert.rejects(access.publishCaBundle('shoal', CA_PEM), /mutatingwebhookconfiguration shoal has no webhooks/);
    api.put(configuration([webhook('pods.shoal.dev')]));
    api.deny({ verb: 'patch', resource: 'mutatingwebhookconfigurations' });
    await assert.rejects(access.publishCaBundle('shoal', CA_PEM), (err: unknown) => {
      assert.ok(err instanceof KubeApiError);
      assert.equal(err.status, 403);
      assert.equal(err.reason, 'Forbidden');
      assert.match(err.message, /^cannot patch mutatingwebhookconfiguration shoal: 403 .* cannot patch resource "mutatingwebhookconfigurations"/);
      return true;
    });
  });
});
