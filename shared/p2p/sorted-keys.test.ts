import assert from 'node:assert/strict';
import { SortedKeys } from './sorted-keys.ts';

/** A small deterministic PRNG (mulberry32), so a failure replays. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Code-unit order, as `<` compares. */
const byCodeUnits = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

describe('SortedKeys', () => {
  it('adds and deletes once, and lists keys by prefix in code-unit order', () => {
    const keys = new SortedKeys();
    for (const key of ['/b', '/a/bc', '/a/b', '/a/b/c', '/a']) assert.equal(keys.add(key), true);
    assert.equal(keys.add('/a/b'), false);
    assert.equal(keys.size, 5);
    assert.deepEqual(keys.startingWith('', 10), ['/a', '/a/b', '/a/b/c', '/a/bc', '/b']);
    assert.deepEqual(keys.startingWith('/a/b', 10), ['/a/b', '/a/b/c', '/a/bc']);
    assert.deepEqual(keys.startingWith('/a/b/', 10), ['/a/b/c']);
    assert.deepEqual(keys.startingWith('/c', 10), []);
    assert.deepEqual(keys.startingWith('/a/b', 2), ['/a/b', '/a/b/c']);
    assert.deepEqual(keys.startingWith('/a/b', 2, '/a/b/c'), ['/a/bc']);
    assert.deepEqual(keys.startingWith('/a/b', 0), []);
    assert.equal(keys.delete('/a/b'), true);
    assert.equal(keys.delete('/a/b'), false);
    assert.equal(keys.delete('/nothing'), false);
    assert.equal(keys.size, 4);
    assert.deepEqual(keys.startingWith('/a/b', 10), ['/a/b/c', '/a/bc']);
  });

  it('goes on after a key that was deleted meanwhile', () => {
    const keys = new SortedKeys(2);
    for (const key of ['/p/1', '/p/2', '/p/3', '/p/4', '/p/5', '/q']) keys.add(key);
    const first = keys.startingWith('/p/', 2);
    assert.deepEqual(first, ['/p/1', '/p/2']);
    keys.delete('/p/2');
    keys.delete('/p/3');
    assert.deepEqual(keys.startingWith('/p/', 10, first.at(-1)), ['/p/4', '/p/5']);
  });

  for (const chunkSize of [1, 2, 3, 64]) {
    it(`agrees with a sorted array through random adds and deletes (chunk size ${chunkSize})`, () => {
      const next = random(chunkSize);
      const parts = ['a', 'b', 'ab', 'é', '😀', 'ｚ', ''];
      const pick = () => parts[Math.floor(next() * parts.length)]!;
      const keys = new SortedKeys(chunkSize);
      const reference = new Set<string>();
      for (let step = 0; step < 3000; step++) {
        const key = `/${pick()}/${pick()}${pick()}`;
        if (next() < 0.6) {
          assert.equal(keys.add(key), !reference.has(key), `add ${key}`);
          reference.add(key);
        } else {
          assert.equal(keys.delete(key), reference.delete(key), `delete ${key}`);
        }
        assert.equal(keys.size, reference.size);
        if (step % 50 === 0) {
          const sorted = [...reference].sort(byCodeUnits);
          assert.deepEqual(keys.startingWith('', Infinity), sorted);
          const prefix = `/${pick()}`.slice(0, 1 + Math.floor(next() * 3));
          const matching = sorted.filter((k) => k.startsWith(prefix));
          assert.deepEqual(keys.startingWith(prefix, Infinity), matching, `prefix ${prefix}`);
          // Paging through with `after` yields the same run.
          const paged: string[] = [];
          for (let page = keys.startingWith(prefix, 3); page.length > 0; page = keys.startingWith(prefix, 3, page.at(-1))) paged.push(...page);
          assert.deepEqual(paged, matching);
        }
      }
    });
  }

  it('refuses a chunk size that is not a positive integer', () => {
    assert.throws(() => new SortedKeys(0), /chunk size 0/);
    assert.throws(() => new SortedKeys(1.5), /chunk size 1.5/);
  });
});
