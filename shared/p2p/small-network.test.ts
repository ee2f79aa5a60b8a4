import assert from 'node:assert/strict';
import { peerIdFromString } from '@libp2p/peer-id';
import type { DhtRouter } from './dht-router.ts';
import { IndexedDatastore } from './indexed-datastore.ts';
import { provideToTableWhenSmall } from './small-network.ts';
import { hostPort, lookupAll, TestNetwork, until, type TestNodeInit } from './testing.ts';

const DIGEST = `sha256:${'7a'.repeat(32)}`;

describe('provides in a network smaller than K', function () {
  this.timeout(15_000);
  const net = new TestNetwork();
  afterEach(() => net.close());

  /**
   * n nodes on 127.0.0.(base+i), each bootstrapped to every one before it, each with a store the test reads.
   * Without the record sync, whose pushes take the place of kad-dht's provides below K (record-sync.test.ts):
   * as nodes of a version without it, or next to one.
   */
  async function mesh(n: number, base: number, init: TestNodeInit = {}): Promise<{ node: DhtRouter; store: IndexedDatastore }[]> {
    const nodes: { node: DhtRouter; store: IndexedDatastore }[] = [];
    for (let i = 0; i < n; i++) {
      const store = new IndexedDatastore();
      const node = await net.start(`127.0.0.${base + i}`, { recordSync: false, ...init, datastore: store, bootstrapPeers: nodes.map((m) => hostPort(m.node)) });
      nodes.push({ node, store });
    }
    // A bucket holds at most K peers, so a small K may leave some out.
    const known = Math.min(n - 1, init.kBucketSize ?? n);
    await until('every node knows its peers and has looked around', () => nodes.every((m) => m.node.stats().peers >= known && m.node.stats().providesCanUseTable));
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

  it('asks the network until kad-dht\'s first self-query has ended, then the table', async () => {
    const self = peerIdFromString('12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN');
    const peer = peerIdFromString('12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8');
    const queried: Uint8Array[] = [];
    const peerRouting = {
      async *getClosestPeers(key: Uint8Array): AsyncGenerator<unknown> {
        queried.push(key);
        yield await Promise.resolve({ name: 'FINAL_PEER', peer: { id: peer } });
      },
    };
    const querySelf: { initialQuerySelfHasRun?: unknown } = { initialQuerySelfHasRun: {} };
    const dht = { peerRouting, contentRouting: { peerRouting }, routingTable: { size: 1, kBucketSize: 20, closestPeers: () => [peer] }, querySelf };
    const targets = provideToTableWhenSmall(dht, self);
    const closest = async (): Promise<unknown[]> => {
      const events: unknown[] = [];
      for await (const e of dht.contentRouting.peerRouting.getClosestPeers(new Uint8Array([1]))) events.push(e);
      return events;
    };
    assert.equal(targets.looked, false);
    await closest();
    assert.equal(queried.length, 1, 'asked the network before the self-query');
    assert.equal(targets.fromTable, 0);
    querySelf.initialQuerySelfHasRun = undefined;
    assert.equal(targets.looked, true);
    const events = (await closest()) as { name: string; peer: { id: unknown } }[];
    assert.equal(queried.length, 1, 'no network query once the self-query ended');
    assert.equal(targets.fromTable, 1);
    assert.deepEqual(events.map((e) => [e.name, e.peer.id]), [['FINAL_PEER', peer]]);
  });

  it('refuses a kad-dht whose internals it does not know', () => {
    assert.throws(() => provideToTableWhenSmall({}, undefined as never), /kad-dht version is not supported/);
    const peerRouting = { getClosestPeers: async function* () {} };
    const other = { getClosestPeers: async function* () {} };
    const table = { size: 0, kBucketSize: 20, closestPeers: () => [] };
    assert.throws(() => provideToTableWhenSmall({ peerRouting, contentRouting: { peerRouting: other }, routingTable: table, querySelf: { initialQuerySelfHasRun: undefined } }, undefined as never), /not supported/);
    assert.throws(() => provideToTableWhenSmall({ peerRouting, contentRouting: { peerRouting }, routingTable: table }, undefined as never), /not supported/);
  });
});
