import assert from 'node:assert/strict';
import { refreshMarginMs, TokenCache } from './token-cache.ts';

describe('TokenCache', function () {
  let now: number;
  const clock = () => now;
  beforeEach(function () {
    now = 1_000_000;
  });

  it('keeps a token for expires_in less a margin: 10% of its life, at most 10 s', function () {
    assert.equal(refreshMarginMs(60_000), 6000);
    assert.equal(refreshMarginMs(3_600_000), 10_000);
    const cache = new TokenCache({ now: clock });
    cache.set('k', 't', 300);
    now += 289_999;
    assert.equal(cache.get('k'), 't');
    now += 1;
    assert.equal(cache.get('k'), undefined);
    assert.equal(cache.size, 0, 'an expired token is dropped when looked up');
  });

  it('gives a token without expires_in (or a nonsense one) the spec’s 60 s', function () {
    const cache = new TokenCache({ now: clock });
    cache.set('none', 'a', undefined);
    cache.set('zero', 'b', 0);
    cache.set('negative', 'c', -5);
    now += 53_999;
    assert.deepEqual(['none', 'zero', 'negative'].map((k) => cache.get(k)), ['a', 'b', 'c']);
    now += 1;
    assert.deepEqual(['none', 'zero', 'negative'].map((k) => cache.get(k)), [undefined, undefined, undefined]);
  });

  it('replaces and deletes', function () {
    const cache = new TokenCache({ now: clock });
    cache.set('k', 'old', 60);
    cache.set('k', 'new', 60);
    assert.equal(cache.get('k'), 'new');
    cache.delete('k');
    assert.equal(cache.get('k'), undefined);
  });

  it('stays within maxEntries: expired entries go first, then those expiring soonest', function () {
    const cache = new TokenCache({ now: clock, maxEntries: 2 });
    cache.set('short', '1', 60);
    cache.set('long', '2', 3600);
    cache.set('mid', '3', 600);
    assert.equal(cache.size, 2);
    assert.equal(cache.get('short'), undefined);
    assert.equal(cache.get('long'), '2');
    assert.equal(cache.get('mid'), '3');
  });
});
