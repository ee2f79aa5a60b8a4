import assert from 'node:assert/strict';
import type { PeerId } from '@libp2p/interface';
import { silentLogger } from '../log.ts';
import { PushOutbox } from './push-outbox.ts';
import { until } from './testing.ts';

const peer = (name: string) => ({ toString: () => name }) as unknown as PeerId;

/** A send that each test steers: what each peer got, and a gate per peer to hold or fail its sends. */
function sender() {
  const got = new Map<string, string[][]>();
  const held = new Map<string, PromiseWithResolvers<void>>();
  const failing = new Set<string>();
  return {
    got,
    failing,
    hold(name: string) {
      held.set(name, Promise.withResolvers());
    },
    release(name: string) {
      held.get(name)?.resolve();
      held.delete(name);
    },
    send: async (to: PeerId, keys: readonly string[]): Promise<number> => {
      const name = to.toString();
      await held.get(name)?.promise;
      if (failing.has(name)) throw new Error(`${name} refuses`);
      got.set(name, [...(got.get(name) ?? []), [...keys]]);
      return keys.length;
    },
  };
}

describe('PushOutbox', () => {
  const outboxes: PushOutbox[] = [];
  afterEach(() => {
    for (const outbox of outboxes.splice(0)) outbox.close();
  });
  function outbox(send: ReturnType<typeof sender>, inTable: (peer: PeerId) => boolean = () => true): PushOutbox {
    const box = new PushOutbox({ send: send.send, inTable, maxRetryMs: 100, logger: silentLogger });
    outboxes.push(box);
    return box;
  }

  it('sends a burst in one push, and what comes while a push is on its way in the next', async () => {
    const s = sender();
    const box = outbox(s);
    const a = peer('a');
    s.hold('a');
    for (const key of ['k1', 'k2', 'k3']) box.add([a], key);
    // The first push is now on its way, held at the peer.
    await new Promise((resolve) => setTimeout(resolve, 20));
    box.add([a], 'k4');
    box.add([a], 'k4');
    s.release('a');
    await box.idle();
    assert.deepEqual(s.got.get('a'), [['k1', 'k2', 'k3'], ['k4']]);
    assert.deepEqual(box.stats(), { pushesSucceeded: 2, pushesFailed: 0, keysPushed: 4 });
  });

  it('holds back only the slow peer, and retries a failing one until it takes the keys', async () => {
    const s = sender();
    const box = outbox(s);
    s.hold('slow');
    s.failing.add('failing');
    box.add([peer('slow'), peer('failing'), peer('fast')], 'k');
    await until('the fast peer got it', () => s.got.has('fast'));
    await until('the failing peer was tried twice', () => box.stats().pushesFailed >= 2);
    assert.equal(s.got.has('slow'), false);
    s.failing.delete('failing');
    await until('the failing peer got it on a retry', () => s.got.has('failing'));
    s.release('slow');
    await box.idle();
    assert.deepEqual([...s.got.keys()].sort(), ['failing', 'fast', 'slow']);
  });

  it('sends the news of a table change with no keys, and forgets a peer that left', async () => {
    let inTable = true;
    const s = sender();
    const box = outbox(s, () => inTable);
    box.add([peer('a')], undefined);
    await box.idle();
    assert.deepEqual(s.got.get('a'), [[]]);
    s.failing.add('b');
    inTable = false;
    box.add([peer('b')], 'k');
    await until('b failed', () => box.stats().pushesFailed === 1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(box.stats().pushesFailed, 1, 'a peer out of the table is not tried again');
    await box.idle();
  });

  it('does nothing more for a peer dropped while its push failed', async () => {
    const s = sender();
    const box = outbox(s);
    s.hold('a');
    s.failing.add('a');
    box.add([peer('a')], 'k');
    await new Promise((resolve) => setTimeout(resolve, 20));
    box.drop('a');
    s.release('a');
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(box.stats().pushesFailed, 0);
    await box.idle();
  });
});
