import assert from 'node:assert/strict';
import { askOrder, rendezvousPick } from './rendezvous.ts';

const peers = (n: number) => Array.from({ length: n }, (_, i) => ({ peerId: `peer-${i}` }));
const keys = Array.from({ length: 2000 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);

describe('rendezvousPick', function () {
  it('picks nothing from no candidates', function () {
    assert.equal(rendezvousPick([], 'k'), undefined);
  });

  it('is deterministic and ignores the order of the candidates', function () {
    const set = peers(5);
    const reversed = [...set].reverse();
    for (const key of keys) assert.equal(rendezvousPick(set, key)?.peerId, rendezvousPick(reversed, key)?.peerId);
  });

  it('spreads keys over every candidate', function () {
    const counts = new Map<string, number>();
    for (const key of keys) {
      const id = rendezvousPick(peers(4), key)!.peerId;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    assert.equal(counts.size, 4);
    for (const count of counts.values()) assert.ok(count > keys.length / 4 / 2, `uneven: ${[...counts.values()].join(', ')}`);
  });

  it('moves only the keys of a peer that leaves, and to a peer that joins only the keys it wins', function () {
    const before = peers(5);
    const without = before.filter((p) => p.peerId !== 'peer-2');
    const joined = [...before, { peerId: 'peer-new' }];
    for (const key of keys) {
      const owner = rendezvousPick(before, key)!.peerId;
      if (owner !== 'peer-2') assert.equal(rendezvousPick(without, key)!.peerId, owner, `${key} moved when peer-2 left`);
      const after = rendezvousPick(joined, key)!.peerId;
      assert.ok(after === owner || after === 'peer-new', `${key} moved from ${owner} to ${after}`);
    }
    const moved = keys.filter((k) => rendezvousPick(joined, k)!.peerId !== rendezvousPick(before, k)!.peerId).length;
    assert.ok(moved < keys.length / 3, `${moved} of ${keys.length} keys moved for one new peer of six`);
  });
});

describe('askOrder', function () {
  it('orders every holder, the same whatever order they came in', function () {
    const set = peers(5);
    const order = askOrder(set, 'asker', keys[0]!).map((p) => p.peerId);
    assert.deepEqual([...order].sort(), set.map((p) => p.peerId).sort());
    assert.deepEqual(askOrder([...set].reverse(), 'asker', keys[0]!).map((p) => p.peerId), order);
  });

  it('sends different askers of one key to different holders first', function () {
    const firsts = new Set(Array.from({ length: 40 }, (_, i) => askOrder(peers(4), `asker-${i}`, keys[0]!)[0]!.peerId));
    assert.equal(firsts.size, 4);
  });
});
