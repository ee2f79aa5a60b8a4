import assert from 'node:assert/strict';
import type { DhtRouter } from './dht-router.ts';
import { generateNetworkKey, parseNetworkKey } from './network-key.ts';
import { hostPort, lookupAll, TestNetwork, until } from './testing.ts';

describe('private network (pre-shared key)', function () {
  this.timeout(15_000);
  const net = new TestNetwork();
  after(() => net.close());

  const networkKey = parseNetworkKey(generateNetworkKey());
  let members: DhtRouter[];
  let outsiders: DhtRouter[];

  before(async () => {
    const first = await net.start('127.0.0.141', { networkKey });
    members = [first];
    for (const ip of ['127.0.0.142', '127.0.0.143']) members.push(await net.start(ip, { networkKey, bootstrapPeers: [hostPort(first)] }));
    outsiders = [
      // No key at all, and a different key: both try to join through a member.
      await net.start('127.0.0.144', { bootstrapPeers: [hostPort(first)] }),
      await net.start('127.0.0.145', { networkKey: parseNetworkKey(generateNetworkKey()), bootstrapPeers: [hostPort(first)] }),
    ];
    // A member that also lists an outsider among its bootstrap peers.
    members.push(await net.start('127.0.0.146', { networkKey, bootstrapPeers: [hostPort(outsiders[0]!), hostPort(first)] }));
    await until('members have peers', () => members.every((m) => m.stats().peers > 0));

    for (const node of [members[1]!, ...outsiders]) node.advertise(['sha256:shared']);
    members[1]!.advertise(['sha256:member-only']);
    for (const outsider of outsiders) outsider.advertise(['sha256:outsider-only']);
    await Promise.all([members[1]!, ...outsiders].map((n) => n.providesIdle()));
  });

  it('keeps outsiders out of the routing tables, theirs and the members\'', async () => {
    await new Promise((resolve) => setTimeout(resolve, 300)); // several bootstrap retries
    for (const outsider of outsiders) {
      assert.equal(outsider.stats().peers, 0);
      assert.equal(outsider.ready(), false);
    }
    // Three other members at most: no outsider among them.
    for (const member of members) assert.ok(member.stats().peers <= 3, `${member.stats().peers} peers`);
  });

  it('shows members only members\' records', async () => {
    for (const member of [members[0]!, members[2]!, members[3]!]) {
      await until('shared key found', async () => (await lookupAll(member, 'sha256:shared', 300)).length > 0);
      assert.deepEqual(await lookupAll(member, 'sha256:shared', 300), [{ peerId: members[1]!.peerId, host: '127.0.0.142' }]);
      assert.deepEqual(await lookupAll(member, 'sha256:outsider-only', 300), []);
    }
  });

  it('finds nothing for an outsider', async () => {
    for (const outsider of outsiders) {
      assert.deepEqual(await lookupAll(outsider, 'sha256:member-only', 300), []);
      assert.deepEqual(await lookupAll(outsider, 'sha256:shared', 300), []);
      assert.equal(outsider.stats().providesSucceeded, 0);
    }
  });
});
