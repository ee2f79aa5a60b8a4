import assert from 'node:assert/strict';
import { TtlCache } from './ttl-cache.ts';

describe('TtlCache', function () {
  let now: number;
  let loads: number;
  const load = (value: string) => () => {
    loads += 1;
    return Promise.resolve(value);
  };

  beforeEach(function () {
    now = 0;
    loads = 0;
  });

  it('shares one load between callers that ask while it runs', async function () {
    const cache = new TtlCache<string>({ ttlMs: 1000, maxEntries: 10, now: () => now });
    const results = await Promise.all(Array.from({ length: 20 }, () => cache.get('k', load('v'))));
    assert.deepEqual(new Set(results), new Set(['v']));
    assert.equal(loads, 1);
  });

  it('reuses a value for ttlMs after it resolved, then loads again', async function () {
    const cache = new TtlCache<string>({ ttlMs: 1000, maxEntries: 10, now: () => now });
    assert.equal(await cache.get('k', load('one')), 'one');
    now = 999;
    assert.equal(await cache.get('k', load('two')), 'one');
    now = 1000;
    assert.equal(await cache.get('k', load('two')), 'two');
    assert.equal(loads, 2);
  });

  it('keeps no rejection: the next caller loads again', async function () {
    const cache = new TtlCache<string>({ ttlMs: 1000, maxEntries: 10, now: () => now });
    await assert.rejects(
      cache.get('k', () => Promise.reject(new Error('down'))),
      /down/,
    );
    assert.equal(cache.size, 0);
    assert.equal(await cache.get('k', load('v')), 'v');
  });

  it('drops the oldest entry beyond maxEntries', async function () {
    const cache = new TtlCache<string>({ ttlMs: 1000, maxEntries: 2, now: () => now });
    await cache.get('a', load('a'));
    await cache.get('b', load('b'));
    await cache.get('c', load('c'));
    assert.equal(cache.size, 2);
    assert.equal(await cache.get('b', load('b2')), 'b');
    assert.equal(await cache.get('a', load('a2')), 'a2');
  });
});
