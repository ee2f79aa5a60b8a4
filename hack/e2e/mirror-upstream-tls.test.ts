/**
 * Mirror part 3 over TLS: an upstream registry served over HTTPS with a
 * certificate from a private CA, which the mirrors trust through
 * NODE_EXTRA_CA_CERTS (as a DaemonSet would mount it). A node pulls a new
 * image through its mirror: the blobs come from upstream through the pooled
 * HTTP/1.1 client over TLS, every one of them once.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCertificateAuthority, issueServingCertificate } from '../../webhook/tls/self-signed.ts';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { readMetric } from '../harness/http.ts';
import { buildAndPush } from '../harness/images.ts';
import { assertHolds, pulledBlobs } from '../harness/pulled.ts';
import { createRunDir } from '../harness/runs.ts';

const MiB = 1 << 20;

describe('mirror part 3: upstream over TLS', function () {
  this.timeout(300_000);
  let cluster: Cluster;

  before(async function () {
    const runDir = await createRunDir();
    const ca = createCertificateAuthority();
    const serving = issueServingCertificate(ca, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    const caFile = join(runDir, 'upstream-ca.pem');
    writeFileSync(caFile, ca.certPem);
    cluster = await startCluster({
      nodes: 2,
      runDir,
      registry: { tls: { cert: serving.cert, key: serving.key, ca: ca.certPem } },
      mirrorArgs: ['--upstream-fallback'],
      mirrorEnv: { NODE_EXTRA_CA_CERTS: caFile },
    });
  });

  after(async function () {
    await cluster?.stop();
  });

  it('pulls a new image through the mirror from an HTTPS upstream, each blob fetched once', async function () {
    const { registry, nodes } = cluster;
    assert.match(registry.url, /^https:/);
    const image = await buildAndPush({ dir: join(cluster.runDir, 'img'), layers: [3 * MiB, 2 * MiB], registry: registry.host, repo: 'tls/app', tag: 'v1' });
    const node = nodes[0]!;
    await node.containerd.pull(image.ref);
    await assertHolds(node, image);
    const mirrors = nodes.map((n) => n.mirror!);
    const upstreamBytes = (await Promise.all(mirrors.map((m) => readMetric(m.metricsUrl, 'shoal_upstream_bytes_total', { registry: registry.host })))).reduce((a, b) => a + b, 0);
    const layers = pulledBlobs(image).filter((b) => b.size >= MiB);
    assert.ok(upstreamBytes >= layers.reduce((a, b) => a + b.size, 0), `the mirrors read ${upstreamBytes} bytes from upstream`);
    const gets = await registry.requestsSince(0, 1);
    for (const layer of layers) {
      const fetched = gets.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${layer.digest}`));
      assert.equal(fetched.length, 1, `${layer.digest} fetched once from upstream`);
    }
  });
});
