import assert from 'node:assert/strict';
import { Quarantine } from './quarantine.ts';

describe('Quarantine', () => {
  it('skips a peer until its time runs out, and a second offence starts a new term', () => {
    let now = 1_000;
    const q = new Quarantine({ durationMs: 300, now: () => now });
    assert.equal(q.has('a'), false);
    q.add('a');
    now += 299;
    assert.equal(q.has('a'), true);
    assert.equal(q.has('b'), false);
    q.add('a');
    now += 299;
    assert.equal(q.has('a'), true, 'the second add counts from its own time');
    now += 1;
    assert.equal(q.has('a'), false);
    assert.equal(q.size, 0);
  });

  it('forgets expired peers when it adds new ones', () => {
    let now = 0;
    const q = new Quarantine({ durationMs: 10, now: () => now });
    q.add('a');
    q.add('b');
    assert.equal(q.size, 2);
    now = 10;
    q.add('c');
    assert.equal(q.size, 1);
    assert.deepEqual(['a', 'b', 'c'].filter((id) => q.has(id)), ['c']);
  });
});
