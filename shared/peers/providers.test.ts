import assert from 'node:assert/strict';
import type { Provider } from '../p2p/router.ts';
import { Providers, type ProvidersInit, type ResolveOutcome } from './providers.ts';
import { ScriptedRouter } from './testing.ts';

const p = (n: number): Provider => ({ peerId: `peer-${n}`, host: `127.0.0.${n}` });

function start(router: ScriptedRouter, init: Partial<ProvidersInit> = {}) {
  const outcomes: { outcome: ResolveOutcome; seconds: number }[] = [];
  const providers = new Providers({
    router,
    key: 'sha256:abc',
    want: 3,
    lookupCount: 3,
    firstTimeoutMs: 20,
    laterTimeoutMs: 2000,
    skip: () => false,
    signal: AbortSignal.timeout(10_000),
    onResolved: (outcome, seconds) => outcomes.push({ outcome, seconds }),
    ...init,
  });
  return { providers, outcomes };
}

describe('Providers', () => {
  it('gives up within the resolve timeout when no provider comes, and reports a miss', async () => {
    const router = new ScriptedRouter([{ provider: p(2), atMs: 1000 }]);
    const { providers, outcomes } = start(router);
    const started = Date.now();
    assert.equal(await providers.next(), undefined);
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 20 + 200, `gave up after ${elapsed} ms`);
    assert.equal(outcomes.length, 1);
    assert.equal(outcomes[0]!.outcome, 'miss');
    assert.deepEqual(router.lookups, ['sha256:abc']);
  });

  it('answers a miss before it stops the lookup, and stops it right after', async () => {
    // Stopping a lookup can be slow (RPCs in flight reset, synchronously): the answer must not wait for it.
    const events: string[] = [];
    const router = new ScriptedRouter([{ provider: p(2), atMs: 1000 }]);
    const lookup = router.lookup.bind(router);
    router.lookup = (key, options) => {
      options.signal.addEventListener('abort', () => events.push('lookup stopped'));
      return lookup(key, options);
    };
    const { providers } = start(router, { onResolved: (outcome) => events.push(outcome) });
    assert.equal(await providers.next(), undefined);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(events, ['miss', 'lookup stopped']);
  });

  it('waits past the resolve timeout for later providers once the first came in time', async () => {
    const router = new ScriptedRouter([
      { provider: p(2), atMs: 0 },
      { provider: p(3), atMs: 80 },
    ]);
    const { providers, outcomes } = start(router);
    assert.deepEqual(await providers.next(), p(2));
    assert.deepEqual(await providers.next(), p(3));
    assert.deepEqual(outcomes.map((o) => o.outcome), ['hit']);
    assert.ok(outcomes[0]!.seconds < 0.1);
    providers.close();
    assert.equal(await providers.next(), undefined, 'closed: no more');
  });

  it('ends the later timeout after another provider is wanted, when the lookup finds nothing more', async () => {
    const router = new ScriptedRouter([{ provider: p(2), atMs: 0 }]);
    const { providers } = start(router, { laterTimeoutMs: 150 });
    assert.deepEqual(await providers.next(), p(2));
    const started = Date.now();
    assert.equal(await providers.next(), undefined);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 100 && elapsed < 150 + 200, `ended after ${elapsed} ms`);
  });

  it('looks no further than the first provider until another is wanted, however long that takes', async () => {
    const router = new ScriptedRouter([2, 3, 4].map((n) => ({ provider: p(n), atMs: 0 })));
    const { providers } = start(router, { laterTimeoutMs: 50 });
    assert.deepEqual(await providers.next(), p(2));
    await new Promise((resolve) => setTimeout(resolve, 120));
    assert.equal(router.yielded, 1, 'the lookup waited');
    assert.deepEqual(await providers.next(), p(3), 'wanted after more than the later timeout: still looked for');
    assert.deepEqual(router.lookups, ['sha256:abc', 'sha256:abc'], 'a new lookup for the second');
    assert.equal(router.running, 0, 'no lookup runs between providers');
    providers.close();
  });

  it('skips providers it is told to, and hands out at most `want`, each once', async () => {
    const router = new ScriptedRouter([2, 3, 2, 4, 5, 6].map((n) => ({ provider: p(n), atMs: 0 })));
    const { providers } = start(router, { want: 2, lookupCount: 6, skip: (x) => x.peerId === 'peer-3' });
    assert.deepEqual(await providers.next(), p(2));
    assert.deepEqual(await providers.next(), p(4));
    assert.equal(await providers.next(), undefined);
  });

  it('counts only usable providers against the resolve timeout', async () => {
    const router = new ScriptedRouter([{ provider: p(3), atMs: 0 }]);
    const { providers, outcomes } = start(router, { skip: (x) => x.peerId === 'peer-3' });
    assert.equal(await providers.next(), undefined);
    assert.equal(outcomes[0]!.outcome, 'miss');
  });
});
