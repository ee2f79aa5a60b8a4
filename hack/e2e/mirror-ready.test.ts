/** /readyz of a real mirror follows the peer network: not ready until it has a peer, when it has somebody to join. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { startMirror, type Mirror } from '../harness/mirror.ts';
import { freePort, waitUntil } from '../harness/procs.ts';

describe('mirror readiness', function () {
  this.timeout(120_000);
  let cluster: Cluster;
  const started: Mirror[] = [];

  before(async function () {
    cluster = await startCluster({ nodes: 1, mirrors: false });
  });
  after(async function () {
    for (const m of started) await m.stop();
    await cluster?.stop();
  });

  it('is live but not ready while its bootstrap peer is away, and ready once the peer comes', async function () {
    const node = cluster.nodes[0]!;
    const [ipA, ipB] = ['127.0.0.71', '127.0.0.72'];
    const routerPort = await freePort(ipB);
    const common = { containerd: node.containerd, mirroredRegistries: [cluster.registry.url], routerPort };
    const a = await startMirror({ ...common, dir: join(cluster.runDir, 'mirror-a'), ip: ipA, bootstrapPeers: [`${ipB}:${routerPort}`], waitFor: 'healthy' });
    started.push(a);
    assert.equal((await fetch(`${a.metricsUrl}/healthz`)).status, 200);
    // Give it a few bootstrap rounds against nobody.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const notReady = await fetch(`${a.metricsUrl}/readyz`);
    assert.equal(notReady.status, 503);
    assert.equal(await notReady.text(), 'not ready\n');
    // The peer appears (no bootstrap of its own: ready at once), and a joins it.
    const b = await startMirror({ ...common, dir: join(cluster.runDir, 'mirror-b'), ip: ipB });
    started.push(b);
    await waitUntil(async () => (await fetch(`${a.metricsUrl}/readyz`)).status === 200, { what: 'a ready after b came', timeoutMs: 30_000 });
  });
});
