/**
 * The in-memory datastore libp2p and kad-dht keep their records in, with
 * prefix queries that cost the keys that match rather than every key held.
 *
 * libp2p's default, datastore-core's MemoryDatastore, answers
 * `query({ prefix })` by walking all its keys and filtering. kad-dht finds
 * the providers of a CID with exactly such a query (`/dht/provider/<cid>`),
 * for our own lookups and for every GET_PROVIDERS a peer sends, so a node
 * holding many provider records answered ever slower (a local hit took
 * 0.8 ms at 510 records, 4 ms at 5010). This store keeps its keys sorted
 * beside the map of values, and walks only the run of keys that start with
 * the prefix.
 *
 * Otherwise it behaves as MemoryDatastore does: a prefix matches as plain
 * `startsWith` on the key's string (`/a/b` matches `/a/bc` too); filters,
 * orders, offset, limit, batches and the *Many methods are BaseDatastore's;
 * an aborted signal throws before each operation and between query results.
 * One difference: with no `orders`, results come in key order, where
 * MemoryDatastore gives insertion order (the contract promises neither).
 *
 * A value is kept as a copy of its own when it is a view of a larger buffer.
 * kad-dht's provider records are a few bytes cut from shared 8 KiB slabs (a
 * small-allocation pool, not Node's 64 KiB Buffer pool), and holding the view
 * held the whole slab: a node storing 5010 records held 13 MiB of slabs for
 * them (heap snapshot).
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { AbortOptions } from '@libp2p/interface';
import { BaseDatastore } from 'datastore-core';
import { Key, type KeyQuery, type Pair, type Query } from 'interface-datastore';
import { NotFoundError } from 'interface-store';
import { SortedKeys } from './sorted-keys.ts';

/**
 * Keys read from the index at a time while a query is walked: writes made
 * between results (kad-dht deletes expired records in the middle of its
 * sweep) then neither break the walk nor go unseen beyond the current batch.
 */
const QUERY_BATCH = 256;

/**
 * Results handed out between turns of the event loop. kad-dht sweeps every
 * provider record each minute (expiry, re-provide) with work of its own per
 * record: 32-50 ms for 5010 records, measured in one process. Answered in one
 * go, that held the event loop the whole time, and every request then, blob
 * or lookup, waited; with a turn every 64 results the longest hold was
 * 1.8-2.9 ms. A lookup's few records never reach a turn.
 */
const RESULTS_PER_TURN = 64;

export class IndexedDatastore extends BaseDatastore {
  readonly #values = new Map<string, Uint8Array>();
  readonly #keys: SortedKeys;

  /** chunkSize: the sorted index's chunk size (tests make it small). Default SortedKeys'. */
  constructor(init: { chunkSize?: number } = {}) {
    super();
    this.#keys = new SortedKeys(init.chunkSize);
  }

  /** Keys held. */
  get size(): number {
    return this.#values.size;
  }

  override put(key: Key, value: Uint8Array, options?: AbortOptions): Key {
    options?.signal?.throwIfAborted();
    const k = key.toString();
    if (!this.#values.has(k)) this.#keys.add(k);
    this.#values.set(k, value.byteLength === value.buffer.byteLength ? value : new Uint8Array(value));
    return key;
  }

  override get(key: Key, options?: AbortOptions): Uint8Array {
    options?.signal?.throwIfAborted();
    const value = this.#values.get(key.toString());
    if (value === undefined) throw new NotFoundError();
    return value;
  }

  override has(key: Key, options?: AbortOptions): boolean {
    options?.signal?.throwIfAborted();
    return this.#values.has(key.toString());
  }

  override delete(key: Key, options?: AbortOptions): void {
    options?.signal?.throwIfAborted();
    const k = key.toString();
    if (this.#values.delete(k)) this.#keys.delete(k);
  }

  // BaseDatastore's query() and queryKeys() call these with the query, then
  // filter by prefix (again), filters, orders, offset and limit.

  override async *_all(q: Query, options?: AbortOptions): AsyncGenerator<Pair> {
    for await (const [k, value] of this.#held(q.prefix ?? '', options)) yield { key: new Key(k), value };
  }

  override async *_allKeys(q: KeyQuery, options?: AbortOptions): AsyncGenerator<Key> {
    for await (const [k] of this.#held(q.prefix ?? '', options)) yield new Key(k);
  }

  /** The keys held that start with prefix, with their values, in order; the event loop turns every RESULTS_PER_TURN. */
  async *#held(prefix: string, options?: AbortOptions): AsyncGenerator<[string, Uint8Array]> {
    options?.signal?.throwIfAborted();
    let handed = 0;
    for (const k of this.#walk(prefix)) {
      const value = this.#values.get(k);
      // Deleted since its batch was read.
      if (value === undefined) continue;
      yield [k, value];
      if (++handed % RESULTS_PER_TURN === 0) await nextTurn();
      options?.signal?.throwIfAborted();
    }
  }

  /** The keys starting with prefix, in order, a batch at a time. */
  *#walk(prefix: string): Generator<string> {
    let after: string | undefined;
    for (;;) {
      const batch = this.#keys.startingWith(prefix, QUERY_BATCH, after);
      yield* batch;
      if (batch.length < QUERY_BATCH) return;
      after = batch.at(-1);
    }
  }
}
