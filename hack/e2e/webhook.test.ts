/**
 * The webhook as a process, end to end: real mirrors holding an image (it pins
 * through them while the registry is down), a private registry with htpasswd
 * (pinned with the pod's imagePullSecret, served by the Kubernetes API stand-in;
 * without it a warning and no change), the self-signed CA published as the
 * webhook configuration's caBundle and used to verify the webhook.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { buildAndPush, type PushedImage } from '../harness/images.ts';
import { startKubeApi, type KubeApi } from '../harness/kube-api.ts';
import { waitUntil } from '../harness/procs.ts';
import { startRegistry, type Registry } from '../harness/registry.ts';
import { startWebhook, type Webhook } from '../harness/webhook.ts';
import { tagFromPeers } from '../harness/mirror.ts';
import { pod } from '../../webhook/testing.ts';

type Json = Record<string, unknown>;
const MiB = 1 << 20;

describe('webhook end to end: pinning through peers and upstream', function () {
  this.timeout(180_000);
  let cluster: Cluster;
  let privateRegistry: Registry;
  let kube: KubeApi;
  let webhook: Webhook;
  let shared: PushedImage;
  let secret: PushedImage;
  const credentials = { user: 'alice', password: 'wonderland' };

  /** Sends a pod CREATE review; returns the review response and the pod with the patch applied. */
  async function review(object: Json): Promise<{ response: Json; pod: Json }> {
    const { status, response, pod: patched } = await webhook.review(object);
    assert.equal(status, 200);
    assert.equal(response.allowed, true);
    return { response, pod: patched };
  }
  const image = (p: Json) => ((p.spec as Json).containers as Json[])[0]!.image as string;
  const annotation = (p: Json, key: string) => JSON.parse(((p.metadata as Json).annotations as Record<string, string>)[key]!) as Record<string, string>;

  before(async function () {
    cluster = await startCluster({ nodes: 2 });
    privateRegistry = await startRegistry({ dir: join(cluster.runDir, 'private-registry'), htpasswd: credentials });
    [shared, secret] = await Promise.all([
      buildAndPush({ dir: join(cluster.runDir, 'img-shared'), layers: [MiB], registry: cluster.registry.host, repo: 'team/app', tag: '1.0' }),
      buildAndPush({ dir: join(cluster.runDir, 'img-secret'), layers: [MiB], registry: privateRegistry.host, repo: 'team/secret', tag: '2.0', credentials }),
    ]);
    await cluster.nodes[0]!.containerd.pull(shared.ref);

    kube = await startKubeApi();
    kube.namespace('default');
    kube.namespace('strict', { 'shoal.dev/resolve': 'upstream' });
    kube.serviceAccount('default', 'default');
    kube.serviceAccount('strict', 'default');
    kube.pullSecret('default', 'regcred', { [privateRegistry.host]: { username: credentials.user, password: credentials.password } });
    webhook = await startWebhook({ dir: join(cluster.runDir, 'webhook'), cluster, kube, plainHttpRegistries: [cluster.registry.host, privateRegistry.host] });
    assert.match(webhook.ca, /BEGIN CERTIFICATE/);
  });

  after(async function () {
    await webhook?.stop();
    await kube?.stop();
    await privateRegistry?.stop();
    await cluster?.stop();
  });

  it('with the registry stopped, pins an image a node holds, through peers', async function () {
    // The node's mirror must have advertised the tag first.
    await waitUntil(() => tagFromPeers(cluster.nodes[1]!.mirror!, cluster.registry.host, 'team/app', '1.0'), {
      what: 'the tag advertised',
      timeoutMs: 20_000,
    });
    await cluster.registry.stop();
    try {
      const { response, pod: pinned } = await review(pod({ containers: [{ name: 'app', image: shared.ref }] }));
      assert.equal(image(pinned), `${shared.ref}@${shared.digest}`);
      assert.deepEqual(annotation(pinned, 'shoal.dev/resolved-by'), { app: 'peer' });
      assert.deepEqual(annotation(pinned, 'shoal.dev/original-images'), { app: shared.ref });
      assert.equal(response.warnings, undefined);
    } finally {
      await cluster.registry.start();
    }
  });

  it('a namespace that says resolve: upstream gets no peer digest while upstream is down: unchanged, with a warning', async function () {
    await cluster.registry.stop();
    try {
      const { response, pod: same } = await review(pod({ namespace: 'strict', containers: [{ name: 'app', image: shared.ref }] }));
      assert.equal(image(same), shared.ref);
      assert.equal(response.patch, undefined);
      assert.match(String((response.warnings as string[])[0]), /app/);
    } finally {
      await cluster.registry.start();
    }
  });

  it('pins from a private registry with the pod\'s imagePullSecret', async function () {
    const { pod: pinned } = await review(pod({ containers: [{ name: 'app', image: secret.ref }], imagePullSecrets: ['regcred'] }));
    assert.equal(image(pinned), `${secret.ref}@${secret.digest}`);
    assert.deepEqual(annotation(pinned, 'shoal.dev/resolved-by'), { app: 'upstream' });
    assert.ok(kube.requests.some((r) => r.method === 'GET' && r.path === '/api/v1/namespaces/default/secrets/regcred'), 'the Secret was read through the API');
  });

  it('without the secret: allowed unchanged, with a warning that says why', async function () {
    const { response, pod: same } = await review(pod({ name: 'other', containers: [{ name: 'app', image: `${privateRegistry.host}/team/secret:3.0` }] }));
    assert.equal(response.patch, undefined);
    assert.equal(image(same), `${privateRegistry.host}/team/secret:3.0`);
    assert.match(String((response.warnings as string[])[0]), /unauthorized/);
  });

  it('counts what it did', async function () {
    const text = await (await fetch(`${webhook.metricsUrl}/metrics`)).text();
    assert.match(text, /^shoal_webhook_\w+/m);
    assert.match(text, /^shoal_resolve_duration_seconds_count\{outcome="hit"\} [1-9]/m);
  });
});
