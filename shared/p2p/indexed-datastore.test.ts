import assert from 'node:assert/strict';
import type { AbortOptions } from '@libp2p/interface';
import { MemoryDatastore } from 'datastore-core';
import { Key, type Datastore, type KeyQuery, type Pair, type Query } from 'interface-datastore';
import { IndexedDatastore } from './indexed-datastore.ts';
import { hostPort, lookupAll, TestNetwork, until } from './testing.ts';

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function collect<T>(it: Iterable<T> | AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** `key=value` of each result, in the order yielded. */
async function pairs(ds: Datastore, q: Query): Promise<string[]> {
  return (await collect(ds.query(q))).map(({ key, value }) => `${key.toString()}=${text(value)}`);
}

async function keys(ds: Datastore, q: KeyQuery): Promise<string[]> {
  return (await collect(ds.queryKeys(q))).map(String);
}

const sorted = (xs: string[]) => [...xs].sort();
const byKey = (a: Pair, b: Pair): -1 | 0 | 1 => (a.key.toString() < b.key.toString() ? -1 : a.key.toString() > b.key.toString() ? 1 : 0);
const byValueDesc = (a: Pair, b: Pair): -1 | 0 | 1 => (text(a.value) < text(b.value) ? 1 : text(a.value) > text(b.value) ? -1 : 0);

/** Keys that test where a prefix ends: a key, its children, a sibling that only shares characters, others. */
const LAYOUT = ['/a', '/a/b', '/a/b/c', '/a/b/d/e', '/a/bc', '/a/bc/d', '/a/x', '/ab', '/b', '/b/b'];

/**
 * The Datastore contract as libp2p's default, MemoryDatastore, keeps it: the
 * suite runs against it too, so every expectation is what MemoryDatastore does.
 */
const stores: [string, () => Datastore][] = [
  ['MemoryDatastore (the reference)', () => new MemoryDatastore()],
  ['IndexedDatastore', () => new IndexedDatastore()],
  ['IndexedDatastore, chunks of 2', () => new IndexedDatastore({ chunkSize: 2 })],
];

for (const [name, create] of stores) {
  describe(`Datastore contract: ${name}`, () => {
    let ds: Datastore;
    beforeEach(async () => {
      ds = create();
      for (const k of LAYOUT) await ds.put(new Key(k), bytes(`v${k}`));
    });

    it('puts, gets, overwrites, has and deletes', async () => {
      assert.equal(text(await ds.get(new Key('/a/b'))), 'v/a/b');
      assert.equal(await ds.has(new Key('/a/b')), true);
      assert.equal(await ds.has(new Key('/a/z')), false);
      assert.deepEqual(await ds.put(new Key('/a/b'), bytes('new')), new Key('/a/b'));
      assert.equal(text(await ds.get(new Key('/a/b'))), 'new');
      await ds.delete(new Key('/a/b'));
      await ds.delete(new Key('/a/b'));
      assert.equal(await ds.has(new Key('/a/b')), false);
      await assert.rejects(async () => ds.get(new Key('/a/b')), { name: 'NotFoundError' });
      // A key is cleaned: a trailing slash names the same key.
      assert.equal(text(await ds.get(new Key('/a/bc/'))), 'v/a/bc');
    });

    it('puts, gets and deletes many, yielding each key or pair', async () => {
      const put = await collect(ds.putMany([{ key: new Key('/m/1'), value: bytes('1') }, { key: new Key('/m/2'), value: bytes('2') }]));
      assert.deepEqual(put.map(String), ['/m/1', '/m/2']);
      const got = await collect(ds.getMany([new Key('/m/2'), new Key('/m/1')]));
      assert.deepEqual(got.map(({ key, value }) => `${key.toString()}=${text(value)}`), ['/m/2=2', '/m/1=1']);
      await assert.rejects(collect(ds.getMany([new Key('/m/3')])), { name: 'NotFoundError' });
      assert.deepEqual((await collect(ds.deleteMany([new Key('/m/1')]))).map(String), ['/m/1']);
      assert.deepEqual(sorted(await keys(ds, { prefix: '/m' })), ['/m/2']);
    });

    it('applies a batch on commit, puts before deletes', async () => {
      const batch = ds.batch();
      batch.put(new Key('/n/1'), bytes('1'));
      batch.put(new Key('/n/2'), bytes('2'));
      batch.delete(new Key('/n/2'));
      batch.delete(new Key('/a'));
      assert.deepEqual(await keys(ds, { prefix: '/n' }), []);
      assert.equal(await ds.has(new Key('/a')), true);
      await batch.commit();
      assert.deepEqual(await pairs(ds, { prefix: '/n' }), ['/n/1=1']);
      assert.equal(await ds.has(new Key('/a')), false);
    });

    it('matches a prefix as a string: a parent key takes its children and its own key', async () => {
      assert.deepEqual(sorted(await keys(ds, { prefix: '/a/b/' })), ['/a/b/c', '/a/b/d/e']);
      assert.deepEqual(sorted(await keys(ds, { prefix: '/a/b/d' })), ['/a/b/d/e']);
      assert.deepEqual(sorted(await pairs(ds, { prefix: '/b' })), ['/b/b=v/b/b', '/b=v/b']);
    });

    it('matches a prefix that ends inside a path segment: /a/b takes /a/bc and its children', async () => {
      assert.deepEqual(sorted(await keys(ds, { prefix: '/a/b' })), ['/a/b', '/a/b/c', '/a/b/d/e', '/a/bc', '/a/bc/d']);
      assert.deepEqual(sorted(await keys(ds, { prefix: '/a' })), ['/a', '/a/b', '/a/b/c', '/a/b/d/e', '/a/bc', '/a/bc/d', '/a/x', '/ab']);
      assert.deepEqual(sorted(await keys(ds, { prefix: '/a/b/c/' })), []);
      assert.deepEqual(sorted(await keys(ds, { prefix: '/c' })), []);
    });

    it('takes every key for no prefix, an empty one and "/"', async () => {
      for (const q of [{}, { prefix: '' }, { prefix: '/' }]) {
        assert.deepEqual(sorted(await keys(ds, q)), sorted(LAYOUT));
        assert.equal((await pairs(ds, q)).length, LAYOUT.length);
      }
    });

    it('applies filters after the prefix, and orders in sequence (the last one decides, earlier ones break ties)', async () => {
      await ds.put(new Key('/a/x'), bytes('v/a/b'));
      const deep = ({ key }: Pair) => key.toString().split('/').length > 3;
      assert.deepEqual(sorted(await pairs(ds, { prefix: '/a/b', filters: [deep] })), ['/a/b/c=v/a/b/c', '/a/b/d/e=v/a/b/d/e', '/a/bc/d=v/a/bc/d']);
      assert.deepEqual(await keys(ds, { prefix: '/a', filters: [(k) => !k.toString().includes('b'), (k) => k.toString() !== '/a'] }), ['/a/x']);
      assert.deepEqual(await pairs(ds, { prefix: '/a/', orders: [byKey] }), ['/a/b=v/a/b', '/a/b/c=v/a/b/c', '/a/b/d/e=v/a/b/d/e', '/a/bc=v/a/bc', '/a/bc/d=v/a/bc/d', '/a/x=v/a/b']);
      assert.deepEqual(await pairs(ds, { prefix: '/a/', orders: [byKey, byValueDesc] }), ['/a/bc/d=v/a/bc/d', '/a/bc=v/a/bc', '/a/b/d/e=v/a/b/d/e', '/a/b/c=v/a/b/c', '/a/b=v/a/b', '/a/x=v/a/b']);
      const keyDesc = (a: Key, b: Key): -1 | 0 | 1 => (a.toString() < b.toString() ? 1 : a.toString() > b.toString() ? -1 : 0);
      assert.deepEqual(await keys(ds, { prefix: '/b', orders: [keyDesc] }), ['/b/b', '/b']);
    });

    it('applies offset and limit after filters and orders', async () => {
      const q: Query = { prefix: '/a', filters: [({ key }) => key.toString() !== '/a/x'], orders: [byKey] };
      assert.deepEqual(await pairs(ds, { ...q, offset: 2, limit: 3 }), ['/a/b/c=v/a/b/c', '/a/b/d/e=v/a/b/d/e', '/a/bc=v/a/bc']);
      assert.deepEqual(await pairs(ds, { ...q, offset: 6 }), ['/ab=v/ab']);
      assert.deepEqual(await pairs(ds, { ...q, offset: 7 }), []);
      assert.deepEqual(await pairs(ds, { ...q, limit: 0 }), []);
      assert.deepEqual(await keys(ds, { prefix: '/a/b', orders: [(a, b) => byKey({ key: a, value: bytes('') }, { key: b, value: bytes('') })], offset: 1, limit: 2 }), ['/a/b/c', '/a/b/d/e']);
      // Without orders the subset is unspecified, its size is not.
      assert.equal((await keys(ds, { prefix: '/a', offset: 3, limit: 4 })).length, 4);
      assert.equal((await keys(ds, { offset: 8, limit: 4 })).length, LAYOUT.length - 8);
    });

    it('forgets deleted keys in queries, and finds them again once put back', async () => {
      await ds.delete(new Key('/a/b'));
      await ds.delete(new Key('/a/bc/d'));
      assert.deepEqual(sorted(await keys(ds, { prefix: '/a/b' })), ['/a/b/c', '/a/b/d/e', '/a/bc']);
      for (const k of LAYOUT) await ds.delete(new Key(k));
      assert.deepEqual(await keys(ds, {}), []);
      assert.deepEqual(await pairs(ds, { prefix: '/a' }), []);
      await ds.put(new Key('/a/b'), bytes('again'));
      assert.deepEqual(await pairs(ds, { prefix: '/a' }), ['/a/b=again']);
    });

    it('yields each remaining key once while the caller deletes as it goes (kad-dht\'s record sweep)', async () => {
      const many = Array.from({ length: 600 }, (_, i) => `/dht/provider/${String(i).padStart(4, '0')}`);
      for (const k of many) await ds.put(new Key(k), bytes(k));
      const seen: string[] = [];
      for await (const { key } of ds.query({ prefix: '/dht/provider' })) {
        seen.push(key.toString());
        // Each visit deletes itself and the key after it.
        await ds.delete(key);
        const i = many.indexOf(key.toString());
        if (i + 1 < many.length) await ds.delete(new Key(many[i + 1]!));
      }
      assert.deepEqual(sorted(seen), many.filter((_, i) => i % 2 === 0));
      assert.deepEqual(await keys(ds, { prefix: '/dht' }), []);
    });

    it('throws on an aborted signal, before an operation and between query results', async () => {
      const signal = AbortSignal.abort();
      const key = new Key('/a');
      await assert.rejects(async () => ds.put(key, bytes('x'), { signal }), { name: 'AbortError' });
      await assert.rejects(async () => ds.get(key, { signal }), { name: 'AbortError' });
      await assert.rejects(async () => ds.has(key, { signal }), { name: 'AbortError' });
      await assert.rejects(async () => ds.delete(key, { signal }), { name: 'AbortError' });
      await assert.rejects(async () => collect(ds.query({ prefix: '/a' }, { signal })), { name: 'AbortError' });
      await assert.rejects(async () => collect(ds.queryKeys({}, { signal })), { name: 'AbortError' });
      await assert.rejects(async () => collect(ds.putMany([{ key, value: bytes('x') }], { signal })), { name: 'AbortError' });
      assert.equal(text(await ds.get(key)), 'v/a');

      const controller = new AbortController();
      const seen: string[] = [];
      await assert.rejects(async () => {
        for await (const { key: k } of ds.query({ prefix: '/a' }, { signal: controller.signal })) {
          seen.push(k.toString());
          controller.abort();
        }
      }, { name: 'AbortError' });
      assert.equal(seen.length, 1);
    });
  });
}

describe('IndexedDatastore', () => {
  /** A random mix of puts and deletes, applied to both stores. */
  async function twins(n: number): Promise<{ memory: MemoryDatastore; indexed: IndexedDatastore; prefixes: string[] }> {
    const memory = new MemoryDatastore();
    const indexed = new IndexedDatastore({ chunkSize: 4 });
    const parts = ['a', 'b', 'ab', 'ba', 'é', '😀', 'z0'];
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const pick = () => parts[Math.floor(next() * parts.length)]!;
    for (let i = 0; i < n; i++) {
      const key = new Key(`/${pick()}/${pick()}/${pick()}`);
      const remove = next() < 0.25;
      for (const ds of [memory, indexed]) {
        if (remove) await ds.delete(key);
        else await ds.put(key, bytes(String(i)));
      }
    }
    const prefixes = ['', '/', '/a', '/a/', '/a/b', '/ab', '/ab/', '/é/😀', '/😀', '/z', '/z0/z0/z0', '/c'];
    return { memory, indexed, prefixes };
  }

  it('keeps a view of a larger buffer as a copy of its own, so the buffer can go', () => {
    const store = new IndexedDatastore();
    const slab = new Uint8Array(8192).fill(7);
    store.put(new Key('/dht/provider/a'), slab.subarray(100, 106));
    const whole = Uint8Array.of(1, 2, 3);
    store.put(new Key('/dht/provider/b'), whole);
    const kept = store.get(new Key('/dht/provider/a'));
    assert.deepEqual([...kept], [7, 7, 7, 7, 7, 7]);
    assert.equal(kept.buffer.byteLength, 6, 'not the 8 KiB it was cut from');
    assert.equal(store.get(new Key('/dht/provider/b')), whole, 'a value that is its whole buffer is kept as it is');
  });

  it('answers every prefix query as MemoryDatastore does, through random puts and deletes', async () => {
    const { memory, indexed, prefixes } = await twins(2000);
    assert.equal(indexed.size, (await keys(memory, {})).length);
    for (const prefix of prefixes) {
      assert.deepEqual(sorted(await pairs(indexed, { prefix })), sorted(await pairs(memory, { prefix })), `prefix ${prefix}`);
      assert.deepEqual(sorted(await keys(indexed, { prefix })), sorted(await keys(memory, { prefix })), `prefix ${prefix}`);
    }
  });

  it('lets the event loop turn while a long query is walked, not while a short one is', async () => {
    const ds = new IndexedDatastore();
    for (let i = 0; i < 1000; i++) ds.put(new Key(`/dht/provider/c${String(i).padStart(4, '0')}/p`), bytes('t'));
    let turns = 0;
    const count = async (q: KeyQuery & Query, keysOnly: boolean): Promise<number[]> => {
      // Counts turns of the event loop: an immediate that schedules the next one runs once per turn.
      turns = 0;
      let ticker = setImmediate(function tick() {
        turns++;
        ticker = setImmediate(tick);
      });
      const seenAt: number[] = [];
      try {
        if (keysOnly) for await (const _ of ds.queryKeys(q)) seenAt.push(turns);
        else for await (const _ of ds.query(q)) seenAt.push(turns);
      } finally {
        clearImmediate(ticker);
      }
      return seenAt;
    };
    for (const keysOnly of [false, true]) {
      const long = await count({ prefix: '/dht/provider/' }, keysOnly);
      assert.equal(long.length, 1000);
      // The loop turned between the results: the walk gave it its turns.
      assert.ok(long.at(-1)! > long[0]!, `no turn during a walk of 1000 (keys only: ${keysOnly})`);
      const short = await count({ prefix: '/dht/provider/c0042' }, keysOnly);
      assert.deepEqual(short, [0]);
    }
  });

  it('visits only the keys a prefix query matches, where MemoryDatastore visits every key', async () => {
    /** Counts the entries each store hands to BaseDatastore's query pipeline, before its prefix filter. */
    class CountingIndexed extends IndexedDatastore {
      visited = 0;
      override async *_all(q: Query, options?: AbortOptions): AsyncGenerator<Pair> {
        for await (const pair of super._all(q, options)) {
          this.visited++;
          yield pair;
        }
      }
    }
    class CountingMemory extends MemoryDatastore {
      visited = 0;
      override *_all(q: Query, options?: AbortOptions): Generator<Pair> {
        for (const pair of super._all(q, options) as Generator<Pair>) {
          this.visited++;
          yield pair;
        }
      }
    }
    const indexed = new CountingIndexed();
    const memory = new CountingMemory();
    const cid = (i: number) => `bciqtarget${String(i).padStart(5, '0')}`;
    for (const ds of [indexed, memory]) {
      for (let i = 0; i < 5000; i++) await ds.put(new Key(`/dht/provider/${cid(i)}/12D3KooWpeer`), bytes('t'));
      await ds.put(new Key(`/dht/provider/${cid(42)}/12D3KooWother`), bytes('t'));
    }
    const prefix = `/dht/provider/${cid(42)}`;
    assert.equal((await pairs(indexed, { prefix })).length, 2);
    assert.equal(indexed.visited, 2);
    assert.equal((await pairs(memory, { prefix })).length, 2);
    assert.equal(memory.visited, 5001);
  });

  it('holds the provider records of a DhtRouter\'s kad-dht and answers its lookups', async function () {
    this.timeout(15_000);
    /** Records every prefix kad-dht and libp2p query. */
    class Recording extends IndexedDatastore {
      readonly prefixes: string[] = [];
      override async *_all(q: Query, options?: AbortOptions): AsyncGenerator<Pair> {
        this.prefixes.push(q.prefix ?? '');
        yield* super._all(q, options);
      }
    }
    const net = new TestNetwork();
    try {
      const a = await net.start('127.0.0.141');
      const datastore = new Recording();
      const b = await net.start('127.0.0.142', { bootstrapPeers: [hostPort(a)], datastore });
      await until('peered', () => a.stats().peers > 0 && b.stats().peers > 0);
      const digest = `sha256:${'5e'.repeat(32)}`;
      a.advertise([digest]);
      await until('b holds a\'s record', async () => (await keys(datastore, { prefix: '/dht/provider/' })).length === 1);
      const [record] = await keys(datastore, { prefix: '/dht/provider/' });
      assert.match(record!, new RegExp(`^/dht/provider/[a-z2-7]+/${a.peerId}$`));
      datastore.prefixes.length = 0;
      assert.deepEqual(await lookupAll(b, digest, 500, 1), [{ peerId: a.peerId, host: '127.0.0.141' }]);
      assert.ok(datastore.prefixes.includes(record!.slice(0, record!.lastIndexOf('/'))), `queried ${datastore.prefixes.join(', ')}`);
    } finally {
      await net.close();
    }
  });
});
