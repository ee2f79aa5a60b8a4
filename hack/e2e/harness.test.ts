/**
 * The harness itself, end to end: a real registry and containerd, images built
 * by hand and pushed with skopeo, pulled by ctr byte for byte, and a teardown
 * (or a later run, after a crash) that leaves no process and no mount behind.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { startContainerd, type Containerd } from '../harness/containerd.ts';
import { writeHostsToml } from '../harness/hosts.ts';
import { buildAndPush, buildImage, hostPlatform, MEDIA, pushImage, type PushedImage } from '../harness/images.ts';
import { mountsUnder } from '../harness/mounts.ts';
import { processStartTime, run, spawnProc, startProc, stopAll, waitForTcp, type PidRecord, type Proc } from '../harness/procs.ts';
import { startRegistry, type Registry } from '../harness/registry.ts';
import { createRunDir, isAlive, killLeftovers, livePidsUnder } from '../harness/runs.ts';

const MiB = 1 << 20;

describe('harness: registry, containerd, images', function () {
  // Real processes: hack/test.sh runs every suite under mocha's 2 s default.
  this.timeout(120_000);
  let runDir: string;
  let registry: Registry | undefined;
  let containerd: Containerd | undefined;
  let app: PushedImage;
  let multi: PushedImage;
  const pids: PidRecord[] = [];

  before(async function () {
    runDir = await createRunDir();
    registry = await startRegistry({ dir: join(runDir, 'registry') });
    containerd = await startContainerd({ dir: join(runDir, 'node-0'), name: 'node-0', hostsDir: join(runDir, 'node-0', 'hosts') });
    pids.push(...livePidsUnder(runDir));
    app = await buildAndPush({ dir: join(runDir, 'img-app'), layers: [5 * MiB, 3000], registry: registry.host, repo: 'test/app', tag: 'v1' });
    multi = await buildAndPush({
      dir: join(runDir, 'img-multi'),
      layers: [MiB],
      platforms: [
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 'arm64' },
      ],
      registry: registry.host,
      repo: 'test/multi',
      tag: 'v1',
    });
    writeHostsToml(containerd.hostsDir, registry.host, { server: registry.url });
  });

  after(async function () {
    await stopAll(containerd, registry);
  });

  it('records a pid file for each process it started', function () {
    assert.equal(pids.length, 2);
    assert.deepEqual(pids.map((p) => p.command).sort(), ['containerd', 'docker-registry']);
  });

  it('builds layers of the requested size that do not compress', function () {
    const layers = app.manifests[0]?.layers ?? [];
    assert.equal(layers.length, 2);
    // The gzip stream of 5 MiB of random bytes: the data, a tar header and end blocks, gzip framing.
    assert.ok(layers[0] && layers[0].size > 5 * MiB && layers[0].size < 5 * MiB + 8192, `layer 0 is ${layers[0]?.size} B`);
    assert.equal(app.mediaType, MEDIA.manifest);
    assert.deepEqual(app.manifests[0]?.platform, hostPlatform());
    // manifest + config + 2 layers, no index
    assert.equal(app.blobs.length, 4);
  });

  it('gives equal digests for equal seeds and different ones otherwise', async function () {
    const build = (name: string, seed: string) => buildImage({ dir: join(runDir, name), layers: [70_000], seed });
    const [a, b, c] = await Promise.all([build('seed-a', 'one'), build('seed-b', 'one'), build('seed-c', 'two')]);
    assert.equal(a.digest, b.digest);
    assert.notEqual(a.digest, c.digest);
  });

  it('pushes with the layout digests, so the registry serves the original bytes', async function () {
    const reg = registry!;
    const res = await fetch(`${reg.url}/v2/test/multi/manifests/v1`, { headers: { accept: MEDIA.index } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('docker-content-digest'), multi.digest);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), multi.bytes(multi.digest));
    const platforms = multi.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`);
    assert.deepEqual(platforms, ['linux/amd64', 'linux/arm64']);
    // index + 2 × (manifest + config + layer)
    assert.equal(multi.blobs.length, 7);
    const layer = multi.manifests[1]!.layers[0]!;
    const blob = await fetch(`${reg.url}/v2/test/multi/blobs/${layer.digest}`);
    assert.deepEqual(Buffer.from(await blob.arrayBuffer()), multi.bytes(layer.digest));
  });

  it('refuses a layout whose digest the registry does not end up with', async function () {
    // A tag that names a different image: pushImage must notice the mismatch, not trust skopeo.
    const other = await buildImage({ dir: join(runDir, 'img-other'), layers: [100] });
    await assert.rejects(pushImage({ ...other, digest: app.digest }, { registry: registry!.host, repo: 'test/other' }), /digest/);
  });

  it('ctr pulls the two-layer image through the hosts dir; content equals the originals', async function () {
    const ctd = containerd!;
    await ctd.pull(app.ref, { plainHttp: true });
    for (const blob of app.blobs) {
      const got = await ctd.ctrBytes(['content', 'get', blob.digest]);
      assert.equal(got.length, blob.size, `${blob.digest} size`);
      assert.ok(got.equals(app.bytes(blob.digest)), `${blob.digest} differs`);
    }
    const pulls = registry!.requests().filter((r) => r.userAgent.startsWith('containerd/') && r.path.startsWith('/v2/test/app/'));
    assert.ok(pulls.some((r) => r.method === 'HEAD' && r.path === '/v2/test/app/manifests/v1'), 'resolved by tag');
    for (const layer of app.manifests[0]!.layers) {
      assert.ok(pulls.some((r) => r.method === 'GET' && r.path === `/v2/test/app/blobs/${layer.digest}` && r.bytes === layer.size));
    }
  });

  it('ctr pulls both platforms of the index; content equals the originals', async function () {
    const ctd = containerd!;
    await ctd.pull(multi.ref, { plainHttp: true, allPlatforms: true });
    for (const blob of multi.blobs) {
      const got = await ctd.ctrBytes(['content', 'get', blob.digest]);
      assert.ok(got.equals(multi.bytes(blob.digest)), `${blob.digest} differs`);
    }
  });

  it('ctr images ls lists both images with their digests', async function () {
    const out = await containerd!.ctr(['images', 'ls']);
    const rows = out.trim().split('\n').slice(1).map((line) => line.split(/\s+/));
    const byRef = new Map(rows.map((cols) => [cols[0], cols]));
    assert.equal(byRef.get(app.ref)?.[1], MEDIA.manifest);
    assert.equal(byRef.get(app.ref)?.[2], app.digest);
    assert.equal(byRef.get(multi.ref)?.[1], MEDIA.index);
    assert.equal(byRef.get(multi.ref)?.[2], multi.digest);
  });

  it('restarts the registry on the same storage', async function () {
    const reg = registry!;
    await reg.stop();
    await assert.rejects(fetch(`${reg.url}/v2/`));
    await reg.start();
    const res = await fetch(`${reg.url}/v2/test/app/manifests/v1`, { method: 'HEAD', headers: { accept: MEDIA.manifest } });
    assert.equal(res.headers.get('docker-content-digest'), app.digest);
  });

  it('teardown leaves no process and no mount behind', async function () {
    await containerd!.stop();
    await registry!.stop();
    // The pids recorded at start, not whatever holds those numbers now.
    assert.deepEqual(pids.filter(isAlive), []);
    assert.deepEqual(livePidsUnder(runDir), []);
    assert.deepEqual(mountsUnder(runDir), []);
    assert.equal(existsSync(containerd!.sock), false, 'containerd removed its socket');
  });
});

describe('harness: registry with htpasswd', function () {
  this.timeout(120_000);
  let registry: Registry | undefined;
  let containerd: Containerd | undefined;
  let runDir: string;

  before(async function () {
    runDir = await createRunDir();
    registry = await startRegistry({ dir: join(runDir, 'registry'), htpasswd: { user: 'puller', password: 's3cret' } });
    containerd = await startContainerd({ dir: join(runDir, 'node-0'), name: 'node-0', hostsDir: join(runDir, 'hosts') });
    writeHostsToml(containerd.hostsDir, registry.host, { server: registry.url });
  });

  after(async function () {
    await stopAll(containerd, registry);
  });

  it('rejects anonymous pulls and serves the user', async function () {
    const reg = registry!;
    const image = await buildAndPush({ dir: join(runDir, 'img'), layers: [1000], registry: reg.host, repo: 'private/app', credentials: reg.credentials });
    await assert.rejects(containerd!.pull(image.ref, { plainHttp: true }), /401|unauthorized|authorization/i);
    await containerd!.pull(image.ref, { plainHttp: true, user: 'puller:s3cret' });
    const got = await containerd!.ctrBytes(['content', 'get', image.digest]);
    assert.ok(got.equals(image.bytes(image.digest)));
    const fromContainerd = reg.requests().filter((r) => r.userAgent.startsWith('containerd/'));
    assert.ok(fromContainerd.some((r) => r.status === 401), 'challenged');
    assert.ok(fromContainerd.some((r) => r.status === 200 && r.path === `/v2/private/app/manifests/${image.digest}`), 'served after auth');
  });
});

describe('harness: cluster of two nodes with mirrors', function () {
  this.timeout(120_000);
  let cluster: Cluster | undefined;
  let pids: PidRecord[] = [];

  before(async function () {
    cluster = await startCluster({ nodes: 2 });
    pids = livePidsUnder(cluster.runDir);
  });

  after(async function () {
    await cluster?.stop();
  });

  it('gives each node its own address, containerd, mirror and hosts.toml', async function () {
    const c = cluster!;
    assert.deepEqual(c.nodes.map((n) => n.ip), ['127.0.0.10', '127.0.0.11']);
    // registry + 2 × (containerd + mirror)
    assert.deepEqual(pids.map((p) => p.command).filter((cmd) => cmd !== process.execPath).sort(), ['containerd', 'containerd', 'docker-registry']);
    assert.equal(pids.length, 5);
    for (const node of c.nodes) {
      const mirror = node.mirror!;
      assert.ok(mirror.url.startsWith(`http://${node.ip}:`));
      assert.equal((await fetch(`${mirror.metricsUrl}/readyz`)).status, 200);
      const hostsToml = readFileSync(join(node.hostsDir, c.registry.host, 'hosts.toml'), 'utf8');
      assert.match(hostsToml, new RegExp(`^server = "${c.registry.url}"`));
      assert.ok(hostsToml.includes(`[host."${mirror.url}"]`), hostsToml);
    }
  });

  it("a node's pulls go to its own mirror first", async function () {
    const c = cluster!;
    const [node] = c.nodes;
    const image = await buildAndPush({ dir: join(c.runDir, 'img'), layers: [MiB], registry: c.registry.host, repo: 'test/cluster' });
    await node!.containerd.pull(image.ref);
    const seen = c.registry.requests().length;
    // The mirror now holds the image in its containerd: a second pull resolves there, upstream sees nothing.
    await node!.containerd.pull(image.ref);
    assert.deepEqual(c.registry.requests().slice(seen), []);
  });

  it('teardown leaves no process and no mount behind', async function () {
    const c = cluster!;
    cluster = undefined;
    await c.stop();
    assert.deepEqual(pids.filter(isAlive), []);
    assert.deepEqual(mountsUnder(c.runDir), []);
  });
});

describe('harness: process lifecycle', function () {
  this.timeout(120_000);

  it('stops a process that never gets ready and puts its log tail in the error', async function () {
    const dir = join(await createRunDir(), 'stuck');
    mkdirSync(dir);
    let stuck: Proc | undefined;
    await assert.rejects(
      startProc({ name: 'stuck', dir, command: 'sh', args: ['-c', 'echo listening-nowhere; exec sleep 600'] }, (p) => {
        stuck = p;
        return waitForTcp('127.0.0.1', 1, { what: 'stuck thing', proc: p, timeoutMs: 300 });
      }),
      /stuck thing: not ready after 300 ms[\s\S]*listening-nowhere/,
    );
    assert.equal(stuck?.running(), false);
    assert.deepEqual(livePidsUnder(dir), []);
  });

  it('kills recorded processes, unmounts and removes the run dir of a dead owner, spares a live one', async function () {
    const runRoot = join(await createRunDir(), 'fake-root');
    const crashed = join(runRoot, 'crashed');
    const alive = join(runRoot, 'alive');
    mkdirSync(join(crashed, 'node-0'), { recursive: true });
    mkdirSync(alive, { recursive: true });
    // A dead owner: a process that has exited.
    const gone = spawnProc({ name: 'gone', dir: crashed, command: 'true', args: [] });
    await gone.exited;
    writeFileSync(join(crashed, 'owner.pid'), JSON.stringify({ pid: gone.pid, startTime: 'gone', command: 'true' }));
    writeFileSync(join(alive, 'owner.pid'), JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid), command: 'mocha' }));
    const orphan = spawnProc({ name: 'orphan', dir: join(crashed, 'node-0'), command: 'sleep', args: ['600'] });
    const spared = spawnProc({ name: 'spared', dir: alive, command: 'sleep', args: ['600'] });
    const mountPoint = join(crashed, 'node-0', 'mnt');
    mkdirSync(mountPoint);
    await run('mount', ['-t', 'tmpfs', 'shoal-test', mountPoint]);
    try {
      assert.deepEqual(mountsUnder(crashed).length, 1);
      const report = await killLeftovers(runRoot);
      assert.deepEqual(report.errors, []);
      assert.deepEqual(report.killed.map((p) => p.pid), [orphan.pid]);
      assert.equal(orphan.running(), false);
      assert.deepEqual(mountsUnder(crashed), []);
      assert.equal(existsSync(crashed), false);
      assert.equal(spared.running(), true);
      assert.equal(existsSync(alive), true);
    } finally {
      await orphan.stop();
      await spared.stop();
      if (mountsUnder(crashed).length > 0) await run('umount', [mountPoint]);
    }
  });
});
