/**
 * `npm run demo`: a small local cluster on loopback (an upstream registry, three
 * containerd nodes each with a Shoal mirror that wrote its own hosts.toml, the
 * mirrors joined in one private peer network, the webhook with a Kubernetes API
 * stand-in), and what Shoal does with it, printed step by step. Everything is
 * torn down at the end.
 */
import { join } from 'node:path';
import { startCluster, type Cluster } from './harness/cluster.ts';
import { rawRequest, readMetric } from './harness/http.ts';
import { buildAndPush } from './harness/images.ts';
import { startKubeApi, type KubeApi } from './harness/kube-api.ts';
import { run, waitUntil } from './harness/procs.ts';
import { startWebhook, type Webhook } from './harness/webhook.ts';
import { tagFromPeers } from './harness/mirror.ts';
import { pod } from '../webhook/testing.ts';

const MiB = 1 << 20;
const say = (text: string) => console.log(text);
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

async function timed<T>(what: () => Promise<T>): Promise<[T, string]> {
  const start = performance.now();
  const value = await what();
  return [value, `${((performance.now() - start) / 1000).toFixed(2)} s`];
}

async function main(): Promise<void> {
  say('Starting a local cluster: upstream registry + 3 nodes (containerd and a Shoal mirror each)...');
  const cluster: Cluster = await startCluster({ nodes: 3, hostsConfig: 'mirror' });
  let kube: KubeApi | undefined;
  let webhook: Webhook | undefined;
  try {
    const { registry, nodes } = cluster;
    const [n0, n1, n2] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]];
    for (const n of nodes) say(`  ${n.name}: containerd ${n.containerd.sock}, mirror ${n.mirror!.url}`);
    say(`  upstream registry: ${registry.url}; run dir (logs): ${cluster.runDir}`);

    const image = await buildAndPush({ dir: join(cluster.runDir, 'image'), layers: [24 * MiB, 12 * MiB, 4 * MiB], registry: registry.host, repo: 'demo/app', tag: 'v1' });
    say(`\nPushed ${image.ref} (${mib(image.blobs.reduce((s, b) => s + b.size, 0))} in ${image.blobs.length} blobs) to upstream.`);

    const upstreamBytes = () => registry.requests().reduce((s, r) => s + r.bytes, 0);
    let before = upstreamBytes();
    const [, t0] = await timed(() => n0.containerd.pull(image.ref));
    const fetched = await readMetric(n0.mirror!.metricsUrl, 'shoal_mirror_bytes_total', { source: 'upstream' });
    say(`\n1. ${n0.name} pulls ${image.ref}: no node has it, so its mirror fetches it from upstream (the downloader of each blob for the cluster).`);
    say(`   pulled in ${t0}; upstream served ${mib(upstreamBytes() - before)}; ${n0.name}'s mirror passed on ${mib(fetched)} from upstream.`);

    say(`\n2. ${n0.name}'s mirror now serves the image from ${n0.name}'s containerd content store:`);
    const head = await fetch(`${n0.mirror!.url}/v2/demo/app/manifests/v1?ns=${registry.host}`, { method: 'HEAD' });
    say(`   HEAD /v2/demo/app/manifests/v1?ns=${registry.host} -> ${head.status}, Docker-Content-Digest ${head.headers.get('docker-content-digest')}`);
    const { stdout } = await run('skopeo', ['inspect', '--no-tags', '--tls-verify=false', `docker://${n0.mirror!.host}/demo/app@${image.digest}`]);
    const inspected = JSON.parse(stdout.toString()) as { Digest: string; Layers: string[] };
    say(`   skopeo inspect through the mirror: digest ${inspected.Digest}, ${inspected.Layers.length} layers`);

    say(`\n3. Upstream is STOPPED. ${n1.name} and ${n2.name} pull by tag through their OWN mirrors, which find ${n0.name} through the DHT.`);
    await waitUntil(() => tagFromPeers(n1.mirror!, registry.host, 'demo/app', 'v1'), {
      what: 'the image advertised in the DHT',
      timeoutMs: 20_000,
    });
    await registry.stop();
    before = await readMetric(n0.mirror!.metricsUrl, 'shoal_mirror_bytes_total', { source: 'local' });
    const [, t1] = await timed(() => Promise.all([n1.containerd.pull(image.ref), n2.containerd.pull(image.ref)]));
    const served = (await readMetric(n0.mirror!.metricsUrl, 'shoal_mirror_bytes_total', { source: 'local' })) - before;
    const fromPeers = (await readMetric(n1.mirror!.metricsUrl, 'shoal_mirror_bytes_total', { source: 'peer' })) + (await readMetric(n2.mirror!.metricsUrl, 'shoal_mirror_bytes_total', { source: 'peer' }));
    say(`   both pulled in ${t1} with the registry down; their mirrors got ${mib(fromPeers)} from peers, ${n0.name}'s mirror served ${mib(served)}.`);
    const got = await n1.containerd.ctrBytes(['content', 'get', image.manifests[0]!.layers[0]!.digest]);
    say(`   ${n1.name}'s copy of the first layer is byte-identical to upstream's: ${got.equals(image.bytes(image.manifests[0]!.layers[0]!.digest))}`);

    say('\n4. Bad requests get the OCI error JSON, and nothing outside the content store is ever read:');
    for (const path of ['/v2/demo/app/blobs/sha256:../../../etc/passwd', '/v2/demo/app/blobs/sha256:1234', `/v2/demo/app/blobs/sha256:${'0'.repeat(64)}`]) {
      const res = await rawRequest(n0.mirror!.url, 'GET', path);
      say(`   GET ${path.slice(0, 60)} -> ${res.status} ${res.body.toString()}`);
    }
    await registry.start();
    say('\n5. The webhook pins a pod to the digest its tag names now, so every replica runs the same bytes:');
    kube = await startKubeApi();
    kube.namespace('default');
    kube.serviceAccount('default', 'default');
    webhook = await startWebhook({ dir: join(cluster.runDir, 'webhook'), cluster, kube, plainHttpRegistries: [registry.host], logLevel: 'info' });
    const { response, pod: pinned } = await webhook.review(pod({ containers: [{ name: 'app', image: image.ref }] }));
    const containers = (pinned['spec'] as { containers: { image: string }[] }).containers;
    const resolvedBy = (pinned['metadata'] as { annotations?: Record<string, string> }).annotations?.['shoal.dev/resolved-by'];
    say(`   allowed: ${String(response['allowed'])}; image ${image.ref} -> ${containers[0]!.image}; resolved by ${resolvedBy ?? '-'}`);
    say('\nDone.');
  } finally {
    say('\nTearing down...');
    await webhook?.stop();
    await kube?.stop();
    await cluster.stop();
    say('All processes stopped, nothing left mounted.');
  }
}

main().catch((err: unknown) => {
  console.error(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
