/**
 * Mirror part 1, end to end: real containerd nodes, a real upstream registry,
 * skopeo as a second client. A node's mirror serves what its containerd holds,
 * byte for byte, to skopeo and to another node's containerd while upstream is
 * down; bad requests get exact OCI errors; corrupt content is never served as good.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readdirSync, readFileSync, writeSync, closeSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type Cluster, type ClusterNode } from '../harness/cluster.ts';
import { rawRequest, readMetric } from '../harness/http.ts';
import { buildAndPush, MEDIA, type PushedImage } from '../harness/images.ts';
import { startMirror, type Mirror } from '../harness/mirror.ts';
import { run } from '../harness/procs.ts';
import { snapshotTree } from '../../mirror/containerd-config/testing.ts';

const MiB = 1 << 20;

function err(code: string, message: string, detail?: unknown): unknown {
  return { errors: [detail === undefined ? { code, message } : { code, message, detail }] };
}

describe('mirror part 1: serving from the node\'s containerd', function () {
  this.timeout(180_000);
  let cluster: Cluster;
  let node1: ClusterNode;
  let node2: ClusterNode;
  let mirror1: Mirror;
  /** Several layers, one above the worker-hash threshold. */
  let x: PushedImage;
  /** An OCI index with two platforms. */
  let y: PushedImage;
  /** Corrupted on node 1's disk by one test. */
  let z: PushedImage;
  let grpcMirror: Mirror | undefined;

  before(async function () {
    // `mirror`: each node's hosts.toml is written by the mirror's own configure command.
    // Part 1's behaviour: a miss is a 404 and containerd goes upstream itself.
    cluster = await startCluster({ nodes: 2, hostsConfig: 'mirror', mirrorArgs: ['--upstream-fallback=false'] });
    [node1, node2] = cluster.nodes as [ClusterNode, ClusterNode];
    mirror1 = node1.mirror!;
    const registry = cluster.registry.host;
    const dir = cluster.runDir;
    [x, y, z] = await Promise.all([
      buildAndPush({ dir: join(dir, 'img-x'), layers: [6 * MiB, MiB, 3000], registry, repo: 'test/x', tag: 'v1' }),
      buildAndPush({
        dir: join(dir, 'img-y'),
        layers: [2 * MiB],
        platforms: [
          { os: 'linux', architecture: 'amd64' },
          { os: 'linux', architecture: 'arm64' },
        ],
        registry,
        repo: 'library/y',
        tag: '1.0',
      }),
      buildAndPush({ dir: join(dir, 'img-z'), layers: [5 * MiB, 2000], registry, repo: 'test/z', tag: 'v1' }),
    ]);
    // Node 1 pulls from upstream: its own mirror misses (404) and containerd goes on to the server.
    await node1.containerd.pull(x.ref);
    await node1.containerd.pull(y.ref, { allPlatforms: true });
    await node1.containerd.pull(z.ref);
  });

  after(async function () {
    await grpcMirror?.stop();
    await cluster?.stop();
  });

  it('node 1 pulled from upstream after its own mirror answered 404', async function () {
    assert.ok((await readMetric(mirror1.metricsUrl, 'shoal_mirror_requests_total', { source: 'miss', kind: 'manifest' })) >= 1);
    const layer = x.manifests[0]!.layers[0]!;
    assert.ok(cluster.registry.requests().some((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${layer.digest}`)), 'upstream served the layer');
  });

  it('serves the manifest by digest to skopeo inspect, byte for byte', async function () {
    const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${mirror1.host}/test/x@${x.digest}`]);
    assert.deepEqual(stdout, x.bytes(x.digest));
  });

  for (const [label, pick] of [
    ['a multi-layer image', () => x],
    ['a two-platform index, with --all', () => y],
  ] as const) {
    it(`serves ${label} to skopeo copy: every blob identical to upstream`, async function () {
      const image = pick();
      const dest = mkdtempSync(join(cluster.runDir, 'skopeo-'));
      const all = image.mediaType === MEDIA.index ? ['--all'] : [];
      await run('skopeo', ['copy', '--insecure-policy', '--src-tls-verify=false', '--preserve-digests', ...all, `docker://${mirror1.host}/${image.repo}@${image.digest}`, `oci:${dest}:copy`]);
      const copied = readdirSync(join(dest, 'blobs', 'sha256')).map((hex) => `sha256:${hex}`);
      for (const blob of image.blobs) {
        assert.ok(copied.includes(blob.digest), `skopeo copied ${blob.digest}`);
        assert.deepEqual(readFileSync(join(dest, 'blobs', 'sha256', blob.digest.slice(7))), image.bytes(blob.digest));
      }
    });
  }

  it('with upstream stopped, node 2 pulls by tag through node 1\'s mirror (configured by `configure`)', async function () {
    await mirror1.configureContainerd(node2.hostsDir);
    const servedBefore = await readMetric(mirror1.metricsUrl, 'shoal_mirror_requests_total', { source: 'local', kind: 'blob' });
    await cluster.registry.stop();
    try {
      await node2.containerd.pull(x.ref);
      await node2.containerd.pull(y.ref);
    } finally {
      await cluster.registry.start();
    }
    for (const blob of x.blobs) {
      assert.deepEqual(await node2.containerd.ctrBytes(['content', 'get', blob.digest]), x.bytes(blob.digest), blob.digest);
    }
    const images = await node2.containerd.ctr(['images', 'ls', '-q']);
    assert.match(images, new RegExp(`^${escape(x.ref)}$`, 'm'));
    assert.match(images, new RegExp(`^${escape(y.ref)}$`, 'm'));
    const served = (await readMetric(mirror1.metricsUrl, 'shoal_mirror_requests_total', { source: 'local', kind: 'blob' })) - servedBefore;
    assert.ok(served >= x.blobs.length - 1, `node 1's mirror served ${served} blobs`);
  });

  it('also serves through containerd\'s Content.Read when the content directory is not used', async function () {
    grpcMirror = await startMirror({
      dir: join(cluster.runDir, 'node-1-grpc'),
      ip: node1.ip,
      containerd: node1.containerd,
      mirroredRegistries: [cluster.registry.url],
      contentPath: '',
    });
    for (const blob of x.blobs) {
      const res = await fetch(`${grpcMirror.url}/v2/test/x/blobs/${blob.digest}`);
      assert.equal(res.status, 200);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), x.bytes(blob.digest), blob.digest);
    }
    const ranged = await fetch(`${grpcMirror.url}/v2/test/x/blobs/${x.manifests[0]!.layers[0]!.digest}`, { headers: { Range: 'bytes=100-199' } });
    assert.equal(ranged.status, 206);
    assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), x.bytes(x.manifests[0]!.layers[0]!.digest).subarray(100, 200));
  });

  describe('the registry API over a real containerd', function () {
    const tagPath = () => `/v2/test/x/manifests/v1?ns=${encodeURIComponent(cluster.registry.host)}`;

    it('HEAD by tag: the digest, type and length of the manifest containerd holds', async function () {
      const res = await fetch(mirror1.url + tagPath(), { method: 'HEAD' });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('docker-content-digest'), x.digest);
      assert.equal(res.headers.get('content-type'), x.mediaType);
      assert.equal(res.headers.get('content-length'), String(x.size));
      assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
    });

    it('GET by tag of an index: the index bytes as stored', async function () {
      const res = await fetch(`${mirror1.url}/v2/library/y/manifests/1.0?ns=${cluster.registry.host}`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), MEDIA.index);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), y.bytes(y.digest));
    });

    it('blob HEAD, Range and unsatisfiable Range', async function () {
      const layer = x.manifests[0]!.layers[0]!;
      const url = `${mirror1.url}/v2/test/x/blobs/${layer.digest}`;
      const head = await fetch(url, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('content-length'), String(layer.size));
      assert.equal(head.headers.get('accept-ranges'), 'bytes');
      const part = await fetch(url, { headers: { Range: `bytes=${layer.size - 1000}-` } });
      assert.equal(part.status, 206);
      assert.equal(part.headers.get('content-range'), `bytes ${layer.size - 1000}-${layer.size - 1}/${layer.size}`);
      assert.deepEqual(Buffer.from(await part.arrayBuffer()), x.bytes(layer.digest).subarray(layer.size - 1000));
      const past = await fetch(url, { headers: { Range: `bytes=${layer.size}-` } });
      assert.equal(past.status, 416);
      assert.equal(past.headers.get('content-range'), `bytes */${layer.size}`);
      assert.deepEqual(await past.json(), err('UNSUPPORTED', 'range not satisfiable', { size: layer.size }));
    });

    const missing = `sha256:${'0'.repeat(64)}`;
    const table: [string, string, number, () => unknown][] = [
      ['GET', '/v2/test/x/manifests/v1', 404, () => err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'test/x', reference: 'v1' })],
      ['GET', '/v2/test/x/manifests/nope?ns=127.0.0.1:1', 404, () => err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'test/x', reference: 'nope' })],
      ['GET', `/v2/test/x/manifests/${missing}`, 404, () => err('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: 'test/x', reference: missing })],
      ['GET', `/v2/test/x/blobs/${missing}`, 404, () => err('BLOB_UNKNOWN', 'blob unknown to this node', { digest: missing })],
      ['GET', '/v2/test/x/blobs/sha256:abc', 400, () => err('DIGEST_INVALID', 'invalid sha256 digest "sha256:abc": want 64 lowercase hex characters')],
      ['GET', '/v2/test/x/blobs/sha384:abc', 400, () => err('DIGEST_INVALID', 'unsupported digest algorithm "sha384"')],
      ['GET', '/v2/Test/X/manifests/v1', 400, () => err('NAME_INVALID', 'invalid repository name', { name: 'Test/X' })],
      ['GET', '/v2/test/../../etc/blobs/sha256:' + 'a'.repeat(64), 400, () => err('NAME_INVALID', 'paths with . or .. segments are not accepted')],
      ['GET', '/v2/test/x/blobs/sha256:../../../etc/passwd', 400, () => err('NAME_INVALID', 'paths with . or .. segments are not accepted')],
      ['GET', '/v2/test/%2e%2e/x/blobs/sha256:' + 'a'.repeat(64), 400, () => err('NAME_INVALID', 'percent-encoded paths are not accepted')],
      ['GET', '/v2/test/x/blobs/sha256:..%2F..%2Fetc%2Fpasswd', 400, () => err('NAME_INVALID', 'percent-encoded paths are not accepted')],
      ['GET', '/v2/test/x/manifests/.hidden', 400, () => err('MANIFEST_INVALID', 'invalid tag', { tag: '.hidden' })],
      ['GET', '/v2/_catalog', 404, () => err('UNSUPPORTED', 'not a pull route: this mirror serves manifests and blobs only', { path: '/v2/_catalog' })],
      ['PUT', '/v2/test/x/manifests/v2', 405, () => err('UNSUPPORTED', 'PUT is not supported: this mirror serves pulls only')],
      ['POST', '/v2/test/x/blobs/uploads/', 405, () => err('UNSUPPORTED', 'POST is not supported: this mirror serves pulls only')],
      ['PATCH', '/v2/test/x/blobs/uploads/1', 405, () => err('UNSUPPORTED', 'PATCH is not supported: this mirror serves pulls only')],
      ['DELETE', `/v2/test/x/manifests/${missing}`, 405, () => err('UNSUPPORTED', 'DELETE is not supported: this mirror serves pulls only')],
    ];
    for (const [method, path, status, body] of table) {
      it(`${method} ${path.length > 70 ? `${path.slice(0, 67)}...` : path} → ${status} with the exact OCI error`, async function () {
        const res = await rawRequest(mirror1.url, method, path);
        assert.equal(res.status, status);
        assert.equal(res.headers['content-type'], 'application/json');
        assert.deepEqual(JSON.parse(res.body.toString()), body());
      });
    }
  });

  it('hashes a content file once for the reads that overlap it, and remembers the pass for later reads and ranges', async function () {
    // z's large layer: read here first, then corrupted by the next test, which must see it checked again.
    const big = z.manifests[0]!.layers[0]!;
    const url = `${mirror1.url}/v2/test/z/blobs/${big.digest}`;
    const uses = async (use: string) => readMetric(mirror1.metricsUrl, 'shoal_mirror_content_checks_total', { use });
    const [hashed, joined, remembered] = await Promise.all(['hashed', 'joined', 'remembered'].map(uses));
    const bodies = await Promise.all([1, 2, 3].map(async () => Buffer.from(await (await fetch(url)).arrayBuffer())));
    for (const body of bodies) assert.deepEqual(body, z.bytes(big.digest));
    assert.equal((await uses('hashed')) - hashed!, 1, 'three reads at once, one pass over the file');
    assert.equal((await uses('joined')) + (await uses('remembered')) - joined! - remembered!, 2);
    const part = await fetch(url, { headers: { Range: 'bytes=100-199' } });
    assert.equal(part.status, 206);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), z.bytes(big.digest).subarray(100, 200));
    assert.equal((await uses('hashed')) - hashed!, 1, 'a range of a file checked lately is not hashed again');
  });

  it('never serves a corrupt blob as good, on both read paths: 404 before the first byte, else an aborted body', async function () {
    // Flip the last byte of each layer in place in node 1's content store; sizes stay right.
    const [big, small] = [z.manifests[0]!.layers[0]!, z.manifests[0]!.layers[1]!];
    for (const layer of [big, small]) {
      const file = join(node1.containerd.contentPath, 'blobs', 'sha256', layer.digest.slice(7));
      const fd = openSync(file, 'r+');
      writeSync(fd, Buffer.from([readFileSync(file)[layer.size - 1]! ^ 0xff]), 0, 1, layer.size - 1);
      closeSync(fd);
    }
    const before = await readMetric(mirror1.metricsUrl, 'shoal_mirror_corrupt_content_total');
    for (const mirror of [mirror1, grpcMirror!]) {
      // Small: the mismatch is known before anything is sent.
      const res404 = await fetch(`${mirror.url}/v2/test/z/blobs/${small.digest}`);
      assert.equal(res404.status, 404);
      assert.deepEqual(await res404.json(), err('BLOB_UNKNOWN', 'blob unknown to this node', { digest: small.digest }));
      // Large: headers and all but the held-back last piece went out; the body never completes.
      const res = await fetch(`${mirror.url}/v2/test/z/blobs/${big.digest}`);
      assert.equal(res.status, 200);
      await assert.rejects(res.arrayBuffer(), 'a corrupt blob must not complete');
    }
    assert.equal((await readMetric(mirror1.metricsUrl, 'shoal_mirror_corrupt_content_total')) - before, 2);
    // The mirror keeps serving good content after aborting.
    const ok = await fetch(`${mirror1.url}/v2/test/x/blobs/${x.manifests[0]!.layers[2]!.digest}`);
    assert.deepEqual(Buffer.from(await ok.arrayBuffer()), x.bytes(x.manifests[0]!.layers[2]!.digest));
  });

  it('containerd still pulls from upstream itself when the mirror is away', async function () {
    await mirror1.stop();
    try {
      const fresh = await buildAndPush({ dir: join(cluster.runDir, 'img-w'), layers: [MiB], registry: cluster.registry.host, repo: 'test/w', tag: 'v1' });
      await node1.containerd.pull(fresh.ref);
      assert.match(await node1.containerd.ctr(['images', 'ls', '-q']), new RegExp(`^${escape(fresh.ref)}$`, 'm'));
    } finally {
      await mirror1.start();
    }
  });

  it('configure then cleanup leaves the certs.d directory exactly as it was', async function () {
    const certs = join(cluster.runDir, 'certs.d');
    mkdirSync(join(certs, cluster.registry.host), { recursive: true });
    mkdirSync(join(certs, 'ghcr.io'), { recursive: true });
    writeFileSync(join(certs, cluster.registry.host, 'hosts.toml'), `server = "${cluster.registry.url}"\n\n[host."http://10.9.9.9:5000"]\n  capabilities = ["pull"]\n`);
    writeFileSync(join(certs, 'ghcr.io', 'hosts.toml'), 'server = "https://ghcr.io"\n');
    const before = await snapshotTree(certs);
    await mirror1.configureContainerd(certs);
    const written = readFileSync(join(certs, cluster.registry.host, 'hosts.toml'), 'utf8');
    assert.match(written, new RegExp(`\\[host\\."${escape(mirror1.url)}"\\]`));
    // The written file works for a real containerd: a pull through it succeeds.
    await node1.containerd.pull(x.ref, { hostsDir: certs });
    await run(process.execPath, [join(import.meta.dirname, '../../mirror/main.ts'), 'cleanup', '--containerd-registry-config-path', certs]);
    assert.deepEqual(await snapshotTree(certs), before);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
