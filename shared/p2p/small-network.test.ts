import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Key } from 'interface-datastore';
import { keyToCid } from './cid.ts';
import type { DhtRouter } from './dht-router.ts';
import { IndexedDatastore } from './indexed-datastore.ts';
import { useTableWhenSmall } from './small-network.ts';
import { hostPort, lookupAll, TestNetwork, until, type TestNodeInit } from './testing.ts';

const DIGEST = `sha256:${'7a'.repeat(32)}`;

/** A node of the test network, with the record store the test reads. */
interface Member {
  node: DhtRouter;
  store: IndexedDatastore;
  ip: string;
}

describe('kad-dht in a network smaller than K', function () {
  this.timeout(15_000);
  const net = new TestNetwork();
  afterEach(() => net.close());

  /** n nodes on 127.0.0.(base+i), each bootstrapped to every one before it. */
  async function mesh(n: number, base: number, init: TestNodeInit = {}): Promise<Member[]> {
    const members: Member[] = [];
    for (let i = 0; i < n; i++) {
      const store = new IndexedDatastore();
      const ip = `127.0.0.${base + i}`;
      const node = await net.start(ip, { ...init, datastore: store, bootstrapPeers: members.map((m) => hostPort(m.node)) });
      members.push({ node, store, ip });
    }
    // A bucket holds at most K peers, so a small K may leave some out.
    const known = Math.min(n - 1, init.kBucketSize ?? n);
    await until('every node knows its peers', () => members.every((m) => m.node.stats().peers >= known));
    return members;
  }

  async function recordKeys(store: IndexedDatastore, provider: DhtRouter): Promise<Key[]> {
    const keys: Key[] = [];
    for await (const key of store.queryKeys({ prefix: '/dht/provider/' })) if (key.toString().endsWith(`/${provider.peerId}`)) keys.push(key);
    return keys;
  }

  /** kad-dht's XOR distance between a key and a peer, as a hex string that sorts as the distance does. */
  function distance(key: string, peerId: string): string {
    const a = createHash('sha256').update(keyToCid(key).multihash.bytes).digest();
    const b = createHash('sha256').update(peerIdFromString(peerId).toMultihash().bytes).digest();
    return Buffer.from(a.map((x, i) => x ^ b[i]!)).toString('hex');
  }

  it('provides to every peer in the table, without asking the network first', async () => {
    const members = await mesh(4, 151);
    const provider = members[1]!.node;
    provider.advertise([DIGEST]);
    await provider.providesIdle();
    assert.equal(provider.stats().providesSucceeded, 1);
    assert.equal(provider.stats().providesFromTable, 1);
    for (const { node, store } of members) {
      if (node === provider) continue;
      assert.equal((await recordKeys(store, provider)).length, 1, `${hostPort(node)} holds the record`);
      assert.deepEqual(await lookupAll(node, DIGEST, 500), [{ peerId: provider.peerId, host: '127.0.0.152' }]);
    }
  });

  it('ends a miss once the closest peers answered that they know no provider', async () => {
    const [asker] = await mesh(6, 161);
    const before = asker!.node.stats();
    assert.deepEqual(await lookupAll(asker!.node, 'sha256:nobody-has-this', 2_000), []);
    const after = asker!.node.stats();
    assert.equal(after.lookupsFromTable - before.lookupsFromTable, 1);
    assert.equal(after.missesAfterFirstRound - before.missesAfterFirstRound, 1);
  });

  it('asks every other peer at once when a failover wants more providers than the closest named', async () => {
    const members = await mesh(6, 171);
    const [asker, first, second] = [members[0]!, members[1]!, members[2]!];
    for (const provider of [first, second]) {
      provider.node.advertise([DIGEST]);
      await provider.node.providesIdle();
    }
    // The second provider's record stays only on the peer farthest from the key, as the asker sees its peers.
    const others = members.filter((m) => m !== asker).sort((a, b) => (distance(DIGEST, a.node.peerId) < distance(DIGEST, b.node.peerId) ? -1 : 1));
    const farthest = others.at(-1)!;
    for (const m of members) {
      if (m === farthest) continue;
      for (const key of await recordKeys(m.store, second.node)) m.store.delete(key);
    }
    assert.equal((await recordKeys(farthest.store, second.node)).length, 1);
    const found = await lookupAll(asker.node, DIGEST, 2_000, 2);
    assert.deepEqual(new Set(found.map((p) => p.host)), new Set([first.ip, second.ip]));
    // With one provider wanted, the first round's answer is enough.
    assert.equal((await lookupAll(asker.node, DIGEST, 2_000, 1)).length, 1);
    assert.equal(asker.node.stats().missesAfterFirstRound, 0);
  });

  it('asks the network as kad-dht does once the table holds K peers', async () => {
    const members = await mesh(4, 155, { kBucketSize: 2 });
    const provider = members[0]!.node;
    provider.advertise([DIGEST]);
    await provider.providesIdle();
    assert.equal(provider.stats().providesSucceeded, 1);
    assert.equal(provider.stats().providesFromTable, 0);
    for (const { node } of members.slice(1)) {
      await until('found', async () => (await lookupAll(node, DIGEST, 500)).length === 1);
      assert.equal(node.stats().lookupsFromTable, 0);
    }
  });

  it('refuses a kad-dht whose internals it does not know', () => {
    assert.throws(() => useTableWhenSmall({}, undefined as never, 2), /kad-dht version is not supported/);
    const peerRouting = { getClosestPeers: async function* () {} };
    const queryManager = { run: async function* () {} };
    const table = { size: 0, kBucketSize: 20, closestPeers: () => [] };
    const other = { getClosestPeers: async function* () {} };
    assert.throws(() => useTableWhenSmall({ peerRouting, queryManager, contentRouting: { peerRouting: other, queryManager }, routingTable: table }, undefined as never, 2), /not supported/);
  });
});
