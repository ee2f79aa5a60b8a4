/**
 * The webhook as a process of the run (`node webhook/main.ts`), joined to the
 * mirrors' peer network, with a self-signed CA it publishes as the caBundle of
 * its MutatingWebhookConfiguration in the Kubernetes API stand-in; review()
 * sends a pod CREATE review as kube-apiserver would, verifying the webhook
 * with that CA.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import jsonpatch from 'fast-json-patch';
import { createReview, httpsRequest, SERVICE, SERVICE_HOST } from '../../webhook/testing.ts';
import type { Cluster } from './cluster.ts';
import type { KubeApi } from './kube-api.ts';
import { freePort, startProc, waitForHttp, type Proc } from './procs.ts';
import { REPO_ROOT } from './runs.ts';

type Json = Record<string, unknown>;

export interface WebhookInit {
  dir: string;
  /** The mirrors it peers with (their network key and registry port). */
  cluster: Cluster;
  kube: KubeApi;
  /** Registries it talks plain http to. */
  plainHttpRegistries: string[];
  logLevel?: string;
}

export interface Webhook {
  readonly proc: Proc;
  readonly port: number;
  readonly metricsUrl: string;
  /** The CA the webhook published into its configuration's caBundle. */
  readonly ca: string;
  /** Sends a pod CREATE review; the review's response, and the pod with its patch applied. */
  review(object: Json): Promise<{ status: number; response: Json; pod: Json }>;
  stop(): Promise<void>;
}

const CONFIG_NAME = 'shoal';

export async function startWebhook(init: WebhookInit): Promise<Webhook> {
  const { cluster, kube } = init;
  kube.put({
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: CONFIG_NAME },
    webhooks: [{ name: 'pin.shoal.dev', clientConfig: { service: { name: SERVICE.name, namespace: SERVICE.namespace, path: '/mutate' } }, admissionReviewVersions: ['v1'], sideEffects: 'None' }],
  });
  mkdirSync(init.dir, { recursive: true });
  const kubeconfig = join(init.dir, 'kubeconfig');
  writeFileSync(kubeconfig, kube.kubeconfig());
  const port = await freePort('127.0.0.1');
  const metricsPort = await freePort('127.0.0.1');
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  const mirror = cluster.nodes[0]!.mirror!;
  const args = [
    join(REPO_ROOT, 'webhook/main.ts'),
    '--addr', `127.0.0.1:${port}`,
    '--metrics-addr', `127.0.0.1:${metricsPort}`,
    '--self-signed',
    '--service-name', SERVICE.name,
    '--service-namespace', SERVICE.namespace,
    '--webhook-config-name', CONFIG_NAME,
    '--kubeconfig', kubeconfig,
    '--plain-http-registries', init.plainHttpRegistries.join(','),
    '--bootstrap-peers', cluster.nodes.map((n) => n.mirror!.routerHost).join(','),
    '--network-key-file', cluster.networkKeyFile!,
    '--router-addr', `127.0.0.90:${await freePort('127.0.0.90')}`,
    '--peer-registry-port', mirror.host.split(':')[1]!,
    '--log-level', init.logLevel ?? 'debug',
  ];
  const proc = await startProc({ name: 'webhook', dir: init.dir, command: join(REPO_ROOT, 'node_modules/.bin/node'), args, cwd: REPO_ROOT }, (p) =>
    waitForHttp(`${metricsUrl}/readyz`, { what: 'webhook ready', proc: p, timeoutMs: 30_000 }),
  );
  // The CA kube-apiserver would use: what the webhook published into its configuration.
  const config = kube.get('mutatingwebhookconfigurations', undefined, CONFIG_NAME) as unknown as { webhooks: { clientConfig: { caBundle?: string } }[] };
  const bundle = config.webhooks[0]!.clientConfig.caBundle;
  if (bundle === undefined) {
    await proc.stop();
    throw new Error('the webhook is ready but published no caBundle');
  }
  const ca = Buffer.from(bundle, 'base64').toString('utf8');
  return {
    proc,
    port,
    metricsUrl,
    ca,
    async review(object) {
      const res = await httpsRequest(port, { ca, servername: SERVICE_HOST, body: JSON.stringify(createReview(object)), headers: { 'Content-Type': 'application/json' } });
      const response = res.status === 200 ? (res.json() as { response: Json }).response : {};
      const patch = response.patch === undefined ? [] : (JSON.parse(Buffer.from(response.patch as string, 'base64').toString('utf8')) as jsonpatch.Operation[]);
      return { status: res.status, response, pod: jsonpatch.applyPatch(structuredClone(object), patch).newDocument };
    },
    stop: () => proc.stop(),
  };
}
