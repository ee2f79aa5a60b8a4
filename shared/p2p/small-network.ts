/**
 * kad-dht in a network smaller than K (20): provides and lookups that use
 * what the routing table already knows.
 *
 * While the routing table holds fewer than K peers no bucket has ever been
 * full, so it holds every DHT server this node has met, and the K closest
 * peers to any key are all of them. kad-dht's iterative queries then learn
 * nothing the table does not hold; they only cost rounds of RPCs:
 *
 * - A provide first asks the network for the K closest peers (a FIND_NODE to
 *   each), then sends them ADD_PROVIDER. Here it sends ADD_PROVIDER to every
 *   peer in the table straight away. On the 8-node bench the node advertising
 *   5010 keys spent 77.6 s of CPU over 101 s with the query, 20.6 s over 29 s
 *   without. A peer that has not reached this node's table yet gets the record
 *   on the next re-provide; lookups find it on the others meanwhile.
 * - A lookup asks the peers on one path, `alpha` at once, closest first,
 *   until all have answered: a miss in an 8-node network asked all 7. Every
 *   provide reaches every peer here, so the `alpha` closest peers answering
 *   that they know no provider speak for all of them: the lookup ends there,
 *   with two RPCs. Each costs about 1 ms of CPU between the two processes
 *   (noise, pnet, yamux, a new stream each), and on the 8-node bench a miss
 *   took 16 ms before the resolve timer answered it. Only a peer that joined
 *   since the last re-provide (half the record TTL) can lack a record the
 *   others hold; should both be such peers, the node goes upstream for that
 *   pull. When a first-round peer fails, or the caller wants more providers
 *   than the first round named (a failover), every other peer is asked at
 *   once.
 *
 * From K peers on, both go to kad-dht's own queries.
 *
 * kad-dht has no option for either. Its content routing takes the targets of
 * a provide from `peerRouting.getClosestPeers` and runs a lookup through
 * `queryManager.run`, and uses neither for anything else; those two
 * references are replaced with views of the same objects that answer from
 * the table while it is small.
 */
import { createHash } from 'node:crypto';
import type { PeerId } from '@libp2p/interface';

/** A kad-dht query function: asks one peer, yields its events (never throws: failures are QUERY_ERROR events). */
type QueryFunc = (context: Record<string, unknown>) => AsyncIterable<unknown>;

/** The parts of kad-dht 16's internals this relies on (checked at install). */
interface PeerRouting {
  getClosestPeers(key: Uint8Array, options?: unknown): AsyncGenerator<unknown>;
}
interface QueryManager {
  run(key: Uint8Array, query: QueryFunc, options?: { signal?: AbortSignal }): AsyncGenerator<unknown>;
}
interface KadTable {
  readonly size: number;
  readonly kBucketSize: number;
  closestPeers(kadId: Uint8Array, options: { count: number }): PeerId[];
  queueRoutingTableUpdate?(peer: PeerId): void;
}
interface KadInternals {
  peerRouting: PeerRouting;
  queryManager: QueryManager;
  contentRouting: { peerRouting: PeerRouting; queryManager: QueryManager };
  routingTable: KadTable;
}

function isKadInternals(dht: unknown): dht is KadInternals {
  const d = dht as Partial<KadInternals> | undefined;
  return (
    typeof d?.peerRouting?.getClosestPeers === 'function' &&
    typeof d.queryManager?.run === 'function' &&
    d.contentRouting?.peerRouting === d.peerRouting &&
    d.contentRouting.queryManager === d.queryManager &&
    typeof d.routingTable?.closestPeers === 'function' &&
    typeof d.routingTable.kBucketSize === 'number'
  );
}

export interface SmallNetworkCounts {
  /** Provides whose targets came from the routing table. */
  readonly providesFromTable: number;
  /** Lookups that asked the table's peers in two rounds instead of a kad-dht query. */
  readonly lookupsFromTable: number;
  /** Of those, lookups that ended when every first-round peer answered that it knew no provider. */
  readonly missesAfterFirstRound: number;
}

/** A query still running after this long without a signal of its own ends (kad-dht's manager does the same). */
const QUERY_TIMEOUT_MS = 30_000;

/** kad-dht's distance key: the SHA-256 of the key's bytes. */
function kadIdOf(key: Uint8Array): Uint8Array {
  return createHash('sha256').update(key).digest();
}

/**
 * Installs both shortcuts on a kad-dht service; throws if this kad-dht's
 * internals are not the ones it knows. alpha: peers a lookup asks first.
 */
export function useTableWhenSmall(dht: unknown, self: PeerId, alpha: number): SmallNetworkCounts {
  if (!isKadInternals(dht)) throw new Error('@libp2p/kad-dht internals (contentRouting.peerRouting and queryManager, routingTable) not found: this kad-dht version is not supported');
  const { peerRouting, queryManager, routingTable: table } = dht;
  const counts = { providesFromTable: 0, lookupsFromTable: 0, missesAfterFirstRound: 0 };
  const small = (): boolean => table.size > 0 && table.size < table.kBucketSize;

  dht.contentRouting.peerRouting = Object.create(peerRouting, {
    getClosestPeers: {
      value: async function* (key: Uint8Array, options?: unknown): AsyncGenerator<unknown> {
        if (!small()) {
          yield* peerRouting.getClosestPeers(key, options);
          return;
        }
        counts.providesFromTable++;
        for (const id of table.closestPeers(kadIdOf(key), { count: table.kBucketSize })) {
          // The FINAL_PEER event kad-dht's provide acts on; it reads peer.id and path.
          yield { name: 'FINAL_PEER', type: 2, from: self, peer: { id, multiaddrs: [] }, path: { index: 0, queued: 0, running: 0, total: 0 } };
        }
      },
    },
  }) as PeerRouting;

  dht.contentRouting.queryManager = Object.create(queryManager, {
    run: {
      value: async function* (key: Uint8Array, query: QueryFunc, options: { signal?: AbortSignal } = {}): AsyncGenerator<unknown> {
        if (!small()) {
          yield* queryManager.run(key, query, options);
          return;
        }
        counts.lookupsFromTable++;
        const peers = table.closestPeers(kadIdOf(key), { count: table.kBucketSize });
        // Ending early (the caller has its provider) aborts the requests still out.
        const done = new AbortController();
        const signal = AbortSignal.any([done.signal, options.signal ?? AbortSignal.timeout(QUERY_TIMEOUT_MS)]);
        try {
          // The second round starts only if the caller reads past the first: a hit that is enough ends there.
          for (const [n, round] of [peers.slice(0, alpha), peers.slice(alpha)].entries()) {
            if (round.length === 0 || signal.aborted) return;
            const asks = round.map((id, index) => query({ ...options, key, peer: { id, multiaddrs: [] }, path: { index, queued: 0, running: round.length, total: round.length }, numPaths: 1, signal }));
            let answered = 0;
            let named = 0;
            for await (const event of mergeEvents(asks)) {
              const e = event as { name?: string; from?: PeerId; providers?: unknown[] };
              if (e.name === 'PEER_RESPONSE') {
                answered++;
                named += e.providers?.length ?? 0;
                // As kad-dht's manager does: a peer that answered stays fresh in the table.
                if (e.from !== undefined) table.queueRoutingTableUpdate?.(e.from);
              }
              yield event;
            }
            if (n === 0 && answered === round.length && named === 0) {
              counts.missesAfterFirstRound++;
              return;
            }
          }
        } finally {
          done.abort();
        }
      },
    },
  }) as QueryManager;

  return counts;
}

/** Yields the events of every source as they come. */
async function* mergeEvents<T>(sources: AsyncIterable<T>[]): AsyncGenerator<T> {
  const ready: T[] = [];
  let running = sources.length;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  for (const source of sources) {
    void (async () => {
      try {
        for await (const event of source) {
          ready.push(event);
          wake?.();
        }
      } catch (error) {
        failure ??= { error };
      } finally {
        running--;
        wake?.();
      }
    })();
  }
  for (;;) {
    while (ready.length > 0) yield ready.shift()!;
    if (failure !== undefined) throw failure.error;
    if (running === 0) return;
    await new Promise<void>((resolve) => {
      wake = resolve;
    });
    wake = undefined;
  }
}
