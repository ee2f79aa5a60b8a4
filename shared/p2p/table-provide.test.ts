import assert from 'node:assert/strict';
import type { DhtRouter } from './dht-router.ts';
import { IndexedDatastore } from './indexed-datastore.ts';
import { hostPort, lookupAll, TestNetwork, until, type TestNodeInit } from './testing.ts';
import { provideToTableWhenSmall } from './table-provide.ts';

const DIGEST = `sha256:${'7a'.repeat(32)}`;

describe('provides in a network smaller than K', function () {
  this.timeout(15_000);
  const net = new TestNetwork();
  afterEach(() => net.close());

  /** n nodes on 127.0.0.(base+i), each bootstrapped to every one before it, each with a store the test reads. */
  async function mesh(n: number, base: number, init: TestNodeInit = {}): Promise<{ node: DhtRouter; store: IndexedDatastore }[]> {
    const nodes: { node: DhtRouter; store: IndexedDatastore }[] = [];
    for (let i = 0; i < n; i++) {
      const store = new IndexedDatastore();
      const node = await net.start(`127.0.0.${base + i}`, { ...init, datastore: store, bootstrapPeers: nodes.map((m) => hostPort(m.node)) });
      nodes.push({ node, store });
    }
    // A bucket holds at most K peers, so a small K may leave some out.
    const known = Math.min(n - 1, init.kBucketSize ?? n);
    await until('every node knows its peers', () => nodes.every((m) => m.node.stats().peers >= known));
    return nodes;
  }

  async function holdsRecordOf(store: IndexedDatastore, provider: DhtRouter): Promise<boolean> {
    for await (const key of store.queryKeys({ prefix: '/dht/provider/' })) if (key.toString().endsWith(`/${provider.peerId}`)) return true;
    return false;
  }

  it('sends the record to every peer in the table, without asking the network first', async () => {
    const nodes = await mesh(4, 151);
    const provider = nodes[1]!.node;
    provider.advertise([DIGEST]);
    await provider.providesIdle();
    assert.equal(provider.stats().providesSucceeded, 1);
    assert.equal(provider.stats().providesFromTable, 1);
    for (const { node, store } of nodes) {
      if (node === provider) continue;
      assert.ok(await holdsRecordOf(store, provider), `${hostPort(node)} holds the record`);
      assert.deepEqual(await lookupAll(node, DIGEST, 500), [{ peerId: provider.peerId, host: '127.0.0.152' }]);
    }
  });

  it('asks the network once the table holds K peers', async () => {
    const nodes = await mesh(4, 155, { kBucketSize: 2 });
    const provider = nodes[0]!.node;
    provider.advertise([DIGEST]);
    await provider.providesIdle();
    assert.equal(provider.stats().providesSucceeded, 1);
    assert.equal(provider.stats().providesFromTable, 0);
    for (const { node } of nodes.slice(1)) {
      await until('found', async () => (await lookupAll(node, DIGEST, 500)).length === 1);
    }
  });

  it('refuses a kad-dht whose internals it does not know', () => {
    assert.throws(() => provideToTableWhenSmall({}, undefined as never), /kad-dht version is not supported/);
    const peerRouting = { getClosestPeers: async function* () {} };
    const other = { getClosestPeers: async function* () {} };
    const table = { size: 0, kBucketSize: 20, closestPeers: () => [] };
    assert.throws(() => provideToTableWhenSmall({ peerRouting, contentRouting: { peerRouting: other }, routingTable: table }, undefined as never), /not supported/);
  });
});
