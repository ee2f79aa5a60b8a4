/**
 * Provides in a network smaller than K (20) go straight to the routing table's peers.
 *
 * kad-dht's provide first asks the network for the K peers closest to the
 * key, a FIND_NODE to each peer it meets, and then sends ADD_PROVIDER to
 * them. While the routing table holds fewer than K peers no bucket has ever
 * been full, so it holds every DHT server this node has met, and the K
 * closest to any key are all of them: the query costs a round of RPCs per
 * key to learn nothing. On the 8-node bench the node advertising 5010 keys
 * spent 77.6 s of CPU over 101 s with the query, and 20.6 s over 29 s
 * without. From K peers on, provides query the network as before.
 *
 * "Every DHT server this node has met" is the whole network only once the
 * node has looked around: a node that just joined knows its bootstrap peers
 * (3), and in a network of K or more a partial table would put records on
 * the wrong peers. So the table answers only after kad-dht's first self-query
 * (one second after start, it walks the network towards this node's own id)
 * has ended. A peer that joins later gets the record on the next re-provide,
 * and lookups, which still ask the network as kad-dht does, find it on the
 * others meanwhile.
 *
 * Where every peer speaks Shoal's record sync, a provide below K is a push
 * instead (record-sync.ts), and a peer that joins pulls every record at once:
 * this shortcut serves a table with a peer of a version without it.
 *
 * kad-dht has no option for this. Its content routing asks
 * `peerRouting.getClosestPeers` for the targets of a provide, and nothing
 * else; that one reference is replaced with a view of the same object whose
 * getClosestPeers answers from the table when it can.
 */
import { createHash } from 'node:crypto';
import type { PeerId } from '@libp2p/interface';

/** The parts of kad-dht 16's internals this relies on (checked at install). */
interface PeerRouting {
  getClosestPeers(key: Uint8Array, options?: unknown): AsyncGenerator<unknown>;
}
interface KadTable {
  readonly size: number;
  readonly kBucketSize: number;
  closestPeers(kadId: Uint8Array, options: { count: number }): PeerId[];
}
interface KadInternals {
  peerRouting: PeerRouting;
  contentRouting: { peerRouting: PeerRouting };
  routingTable: KadTable;
  /** Holds a deferred until its first self-query has ended, then undefined. */
  querySelf: { initialQuerySelfHasRun?: unknown };
}

function isKadInternals(dht: unknown): dht is KadInternals {
  const d = dht as Partial<KadInternals> | undefined;
  return (
    typeof d?.peerRouting?.getClosestPeers === 'function' &&
    d.contentRouting?.peerRouting === d.peerRouting &&
    typeof d.routingTable?.closestPeers === 'function' &&
    typeof d.routingTable.kBucketSize === 'number' &&
    typeof d.querySelf === 'object' &&
    'initialQuerySelfHasRun' in d.querySelf
  );
}

export interface ProvideTargets {
  /** Provides whose targets came from the routing table. */
  readonly fromTable: number;
  /** Whether kad-dht's first self-query has ended, so the table may answer. */
  readonly looked: boolean;
}

/** Installs the shortcut on a kad-dht service; throws if this kad-dht's internals are not the ones it knows. */
export function provideToTableWhenSmall(dht: unknown, self: PeerId): ProvideTargets {
  if (!isKadInternals(dht)) throw new Error('@libp2p/kad-dht internals (contentRouting.peerRouting, routingTable, querySelf) not found: this kad-dht version is not supported');
  const { peerRouting, routingTable: table, querySelf } = dht;
  let fromTable = 0;
  const looked = (): boolean => querySelf.initialQuerySelfHasRun === undefined;
  dht.contentRouting.peerRouting = Object.create(peerRouting, {
    getClosestPeers: {
      value: async function* (key: Uint8Array, options?: unknown): AsyncGenerator<unknown> {
        if (!looked() || table.size === 0 || table.size >= table.kBucketSize) {
          yield* peerRouting.getClosestPeers(key, options);
          return;
        }
        fromTable++;
        // kad-dht's distance key: the SHA-256 of the key's bytes.
        const kadId = createHash('sha256').update(key).digest();
        for (const id of table.closestPeers(kadId, { count: table.kBucketSize })) {
          // The FINAL_PEER event kad-dht's provide acts on; it reads peer.id and path.
          yield { name: 'FINAL_PEER', type: 2, from: self, peer: { id, multiaddrs: [] }, path: { index: 0, queued: 0, running: 0, total: 0 } };
        }
      },
    },
  }) as PeerRouting;
  return {
    get fromTable() {
      return fromTable;
    },
    get looked() {
      return looked();
    },
  };
}
