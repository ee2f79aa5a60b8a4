import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import type { DhtRouter } from './dht-router.ts';
import { PeerKeyError } from './identity.ts';
import { hostPort, lookupAll, TestNetwork, until } from './testing.ts';

const DIGEST = `sha256:${'3f'.repeat(32)}`;
const TAG = 'docker.io/library/nginx:1.27';

describe('DhtRouter', function () {
  this.timeout(15_000);
  const net = new TestNetwork();
  afterEach(() => net.close());

  /** n nodes on 127.0.0.(base+i), each bootstrapped to the one before (a chain). */
  async function chain(n: number, base: number, init: Parameters<TestNetwork['start']>[1] = {}): Promise<DhtRouter[]> {
    const nodes: DhtRouter[] = [];
    for (let i = 0; i < n; i++) {
      nodes.push(await net.start(`127.0.0.${base + i}`, { ...init, bootstrapPeers: i === 0 ? [] : [hostPort(nodes[i - 1]!)] }));
    }
    await until('every node has a peer', () => nodes.every((node) => node.ready() && node.stats().peers > 0));
    return nodes;
  }

  describe('five nodes in a chain', () => {
    let nodes: DhtRouter[];
    beforeEach(async () => {
      nodes = await chain(5, 101);
    });

    it('finds a digest and a tag advertised on one node from every other, with that node\'s own IP', async () => {
      const provider = nodes[2]!;
      provider.advertise([DIGEST, TAG]);
      assert.deepEqual([...provider.advertised()], [DIGEST, TAG]);
      for (const node of nodes) {
        if (node === provider) continue;
        for (const key of [DIGEST, TAG]) {
          await until(`${key} found`, async () => (await lookupAll(node, key, 500)).length > 0);
          assert.deepEqual(await lookupAll(node, key, 500), [{ peerId: provider.peerId, host: '127.0.0.103' }]);
        }
      }
    });

    it('never yields this node, and stops after `count` providers', async () => {
      for (const node of nodes.slice(0, 3)) node.advertise([DIGEST]);
      await until('three providers found', async () => (await lookupAll(nodes[4]!, DIGEST, 500)).length === 3);
      const found = await lookupAll(nodes[4]!, DIGEST, 500, 2);
      assert.equal(found.length, 2);
      await until('two others found from a provider', async () => (await lookupAll(nodes[0]!, DIGEST, 500)).length === 2);
      const fromProvider = await lookupAll(nodes[0]!, DIGEST, 500);
      assert.ok(fromProvider.every((p) => p.peerId !== nodes[0]!.peerId));
    });

    it('ends a miss quietly when the signal aborts', async () => {
      const started = Date.now();
      assert.deepEqual(await lookupAll(nodes[0]!, 'sha256:nobody-has-this', 30), []);
      assert.ok(Date.now() - started < 250, `took ${Date.now() - started} ms`);
      const aborted = AbortSignal.abort();
      for await (const _ of nodes[0]!.lookup(DIGEST, { count: 1, signal: aborted })) assert.fail('yielded after abort');
    });
  });

  it('answers a lookup at once when it has no peers to ask', async () => {
    const lone = await net.start('127.0.0.110');
    const started = Date.now();
    assert.deepEqual(await lookupAll(lone, DIGEST, 5_000), []);
    assert.ok(Date.now() - started < 500, `took ${Date.now() - started} ms`);
  });

  it('provides keys advertised while alone once a peer joins', async () => {
    const alone = await net.start('127.0.0.138');
    alone.advertise([DIGEST]);
    await alone.providesIdle();
    assert.equal(alone.stats().providesSucceeded, 0);
    const joiner = await net.start('127.0.0.139', { bootstrapPeers: [hostPort(alone)] });
    await until('the joiner finds the key', async () => (await lookupAll(joiner, DIGEST, 300)).length === 1);
  });

  it('keeps its peer id across a restart from the same data dir', async () => {
    const dataDir = await net.tempDir();
    const first = await net.start('127.0.0.111', { dataDir });
    const id = first.peerId;
    await first.close();
    const second = await net.start('127.0.0.111', { dataDir });
    assert.equal(second.peerId, id);
    const other = await net.start('127.0.0.112');
    assert.notEqual(other.peerId, id);
  });

  it('refuses to start on a corrupt peer key', async () => {
    const dataDir = await net.tempDir();
    await writeFile(join(dataDir, 'peer-key'), Buffer.from([1, 2, 3]));
    await assert.rejects(net.start('127.0.0.113', { dataDir }), PeerKeyError);
  });

  describe('readiness', () => {
    it('is ready at once without bootstrap peers', async () => {
      assert.equal((await net.start('127.0.0.114')).ready(), true);
    });

    it('is not ready while no bootstrap peer answers, and becomes ready when a peer joins', async () => {
      // Port 1 on loopback: nothing listens, dials are refused.
      const waiting = await net.start('127.0.0.115', { bootstrapPeers: ['127.0.0.116:1'] });
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(waiting.ready(), false);
      await net.start('127.0.0.117', { bootstrapPeers: [hostPort(waiting)] });
      await until('ready', () => waiting.ready());
    });
  });

  it('exports shoal_peers and shoal_advertised_keys, and takes them out on close', async () => {
    const metrics = new Registry();
    const [a] = await chain(3, 118, {});
    const b = await net.start('127.0.0.121', { bootstrapPeers: [hostPort(a!)], metrics });
    await until('b has peers', () => b.stats().peers > 0);
    b.advertise([DIGEST, TAG]);
    const text = await metrics.metrics();
    assert.match(text, new RegExp(`^shoal_peers ${b.stats().peers}$`, 'm'));
    assert.match(text, /^shoal_advertised_keys 2$/m);
    await b.close();
    assert.equal(metrics.getSingleMetric('shoal_peers'), undefined);
  });

  it('lets records lapse after a withdraw while re-providing the rest before they expire', async () => {
    const ttl = 1_500;
    const [a, b, c] = await chain(3, 125, { advertiseTtlMs: ttl });
    a!.advertise(['sha256:kept', 'sha256:withdrawn']);
    for (const node of [b!, c!]) {
      await until('both found', async () => (await lookupAll(node, 'sha256:kept', 300)).length === 1 && (await lookupAll(node, 'sha256:withdrawn', 300)).length === 1);
    }
    const withdrawnAt = Date.now();
    a!.withdraw(['sha256:withdrawn']);
    assert.deepEqual([...a!.advertised()], ['sha256:kept']);
    for (const node of [b!, c!]) {
      await until('the withdrawn record lapsed', async () => (await lookupAll(node, 'sha256:withdrawn', 300)).length === 0, 2 * ttl);
    }
    // Lapsed within the TTL plus a sweep, and the kept key outlived its first record.
    assert.ok(Date.now() - withdrawnAt < ttl + 500, `lapsed after ${Date.now() - withdrawnAt} ms`);
    await new Promise((resolve) => setTimeout(resolve, ttl));
    for (const node of [b!, c!]) assert.equal((await lookupAll(node, 'sha256:kept', 300)).length, 1);
    assert.ok(a!.stats().providesSucceeded >= 3, `${a!.stats().providesSucceeded} provides`);
  });

  it('keeps at most 8 provides in flight while advertising 300 keys', async () => {
    const [a, b] = await chain(3, 130);
    const keys = Array.from({ length: 300 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);
    a!.advertise(keys);
    assert.equal(a!.stats().providesInFlight, 8);
    assert.equal(a!.stats().pendingProvides, 292);
    await a!.providesIdle();
    const stats = a!.stats();
    assert.equal(stats.peakProvidesInFlight, 8);
    assert.equal(stats.providesSucceeded, 300);
    for (const key of [keys[0]!, keys[150]!, keys[299]!]) {
      await until('found', async () => (await lookupAll(b!, key, 300)).length === 1);
    }
  });

  it('lets a client-mode node look up without joining the servers\' routing tables', async () => {
    const [a, b] = await chain(2, 135);
    const client = await net.start('127.0.0.137', { clientMode: true, bootstrapPeers: [hostPort(a!)] });
    await until('client has peers', () => client.ready());
    b!.advertise([TAG]);
    await until('client finds the tag', async () => (await lookupAll(client, TAG, 300)).some((p) => p.host === '127.0.0.136'));
    assert.equal(a!.stats().peers, 1);
    assert.equal(b!.stats().peers, 1);
  });
});
