/**
 * The Router on a libp2p Kademlia DHT: TCP, noise, yamux, identify, ping, and
 * kad-dht on Shoal's own protocol id, optionally inside a private network.
 *
 * Provider records live minutes, not the DHT's default 48 hours. kad-dht 16
 * configures that through `reprovide` (src/reprovider.ts): every `interval` ms
 * it deletes other peers' records older than `validity` (its only expiry: a
 * record is served until then) and re-provides our own records that are
 * within `threshold` of expiring or past it. Its `providers.provideValidity`
 * option is documented but unused in 16.4. Its re-provide cannot be stopped
 * reliably: `cancelReprovide` deletes our local record, but a re-provide
 * already queued writes it back. So Shoal re-provides itself, from its own
 * set of advertised keys through a bounded queue, and leaves kad-dht's
 * re-provide as a fallback that acts only on records it let expire
 * (threshold 0); withdraw drops the key from the set and the queue and
 * deletes the local record (again for a while, in case the fallback wrote
 * it back).
 */
import { isIP } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import type { PeerId, PeerInfo } from '@libp2p/interface';
import { kadDHT, type KadDHT } from '@libp2p/kad-dht';
import { peerIdFromString } from '@libp2p/peer-id';
import { ping, type Ping } from '@libp2p/ping';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { multiaddr } from '@multiformats/multiaddr';
import type { Datastore } from 'interface-datastore';
import type { CID } from 'multiformats/cid';
import { createLibp2p, type Libp2p } from 'libp2p';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ListenAddress } from '../listen-address.ts';
import type { Logger } from '../log.ts';
import { ipPortOf, pickHost, reachableAddresses, reachablePeerInfo } from './addresses.ts';
import { Bootstrapper, parseBootstrapPeer, systemResolver, type DnsResolver } from './bootstrap.ts';
import { digestToCid, keyToCid } from './cid.ts';
import { loadOrCreatePeerKey } from './identity.ts';
import { IndexedDatastore } from './indexed-datastore.ts';
import { pnetKeyBytes, type NetworkKey } from './network-key.ts';
import { ProvideQueue } from './provide-queue.ts';
import { RecordSync } from './record-sync.ts';
import { KeyDigests } from './record-sync-wire.ts';
import { askOrder } from './rendezvous.ts';
import type { LivePeers, LookupOptions, Provider, Router } from './router.ts';
import { provideToTableWhenSmall, type ProvideTargets } from './small-network.ts';

export const DHT_PROTOCOL = '/shoal/kad/1.0.0';

export interface DhtRouterInit {
  /** Directory for the peer identity key (`<dataDir>/peer-key`); created when missing. Required. */
  readonly dataDir: string;
  readonly logger: Logger;
  /** Where to listen. Default `:5001` (every IPv4 interface) for a server; a client listens only when given one. */
  readonly listen?: ListenAddress;
  /** Only look up and advertise, never answer queries or hold records (the webhook). Default false. */
  readonly clientMode?: boolean;
  /** Pre-shared key of a private network. Default none: an open network. */
  readonly networkKey?: NetworkKey;
  /** Peers to join through: `host:port`, `[v6]:port` or `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/p2p/<id>]`. Default none. */
  readonly bootstrapPeers?: readonly string[];
  /** DNS name whose A/AAAA records are peers (a headless Service). Default none. */
  readonly bootstrapDns?: string;
  /** Port dialed at each bootstrapDns address. Default the listen port, else 5001. */
  readonly bootstrapDnsPort?: number;
  /** Resolves bootstrap names. Default the system resolver (getaddrinfo: /etc/hosts, search domains). */
  readonly resolver?: DnsResolver;
  /** Time between bootstrap rounds (DNS resolved again) while the node has peers. Default 30 s. */
  readonly bootstrapIntervalMs?: number;
  /** Time between bootstrap rounds while the routing table is empty, doubling up to bootstrapIntervalMs. Default 1 s. */
  readonly bootstrapRetryMs?: number;
  /** How long a provider record lives; our records are re-provided once half of it passed. Default 10 min. */
  readonly advertiseTtlMs?: number;
  /**
   * Peers a query asks at once (Kademlia's alpha), along one path. Default 2.
   * kad-dht's own default, 10 on each of 10 disjoint paths, is made for the
   * public IPFS network (slow, unreachable and hostile peers): in a cluster it
   * sends every lookup to every node at once, and on the 8-node bench a
   * restarted node's HEAD through the mirror took p50 16-19 ms, p99 41-49 ms,
   * against 12-13 and 23-27 ms with 2 on one path. Two, not one: a peer that
   * hangs does not hold up the lookup. The peers are private (a network key),
   * so the disjoint paths' defence against hostile nodes buys nothing here.
   */
  readonly queryConcurrency?: number;
  /** Kademlia's K: a bucket's size, and how many peers a provide reaches. Default 20 (kad-dht's). */
  readonly kBucketSize?: number;
  /**
   * Exchange keys with peers (record-sync.ts): in a network smaller than K, provides are
   * pushes and lookups are answered from this node's own records. Default true; false: kad-dht's
   * provides and lookups only, as a node of a version without it.
   */
  readonly recordSync?: boolean;
  /** Time between checks of each peer's keys (record-sync.ts). Default 30 s. */
  readonly recordSyncIntervalMs?: number;
  /** Provides in flight at once. Default 8. */
  readonly provideConcurrency?: number;
  /** A provide still running after this long is aborted (and retried on the next tick). Default 30 s. */
  readonly provideTimeoutMs?: number;
  /**
   * Where libp2p keeps the peer store and kad-dht its provider records. Default a new
   * IndexedDatastore (in memory; libp2p's own default scans every record on each provider lookup).
   */
  readonly datastore?: Datastore;
  /**
   * Registers gauges `shoal_peers` (routing table size), `shoal_live_peers`, `shoal_advertised_keys`,
   * `shoal_dht_provide_queue` and `shoal_dht_records_complete`, and the counter `shoal_dht_lookups_total{path}`, here. Default none.
   */
  readonly metrics?: Registry;
}

export interface DhtRouterStats {
  /** Peers in the routing table. */
  readonly peers: number;
  readonly advertisedKeys: number;
  /** Provides waiting in the queue. */
  readonly pendingProvides: number;
  readonly providesInFlight: number;
  /** The most provides ever in flight at once. */
  readonly peakProvidesInFlight: number;
  /** Provides that reached at least one peer. */
  readonly providesSucceeded: number;
  /** Provides that failed, timed out or reached no peer. */
  readonly providesFailed: number;
  /** Provides sent to the routing table's peers without a query (fewer than K peers). */
  readonly providesFromTable: number;
  /** Whether kad-dht's first self-query has ended, so provides may go straight to the table. */
  readonly providesCanUseTable: boolean;
  /** Whether this node holds every record of the network, so lookups use its own (record-sync.ts). */
  readonly recordsComplete: boolean;
  /** Lookups answered from this node's own records, without asking the network. */
  readonly lookupsLocal: number;
  /** Lookups that asked the network (kad-dht's query). */
  readonly lookupsNetwork: number;
  /** Exchanges of keys with peers that succeeded, and that failed. */
  readonly syncsSucceeded: number;
  readonly syncsFailed: number;
  /** Keys stored from peers' answers and pushes. */
  readonly syncedKeys: number;
  /** Pushes a peer stored, the keys in them (once per peer), and pushes that failed. */
  readonly pushesSucceeded: number;
  readonly keysPushed: number;
  readonly pushesFailed: number;
}

const DEFAULT_PORT = 5001;
const DEFAULT_TTL_MS = 10 * 60_000;
const DEFAULT_QUERY_CONCURRENCY = 2;
/** A dead peer's connection closing leads to a ping; the peer leaves the routing table if it fails. */
const PING_TIMEOUT_MS = 5_000;
const DIAL_TIMEOUT_MS = 5_000;
/** kad-dht's first self-query ends about a second after start. */
const LOOK_AROUND_WAIT_MS = 2_000;

type Services = { identify: unknown; ping: Ping; dht: KadDHT };

/** The parts of kad-dht's RoutingTable (not in its public interface) that the router uses. */
interface RoutingTable extends EventTarget {
  readonly size: number;
  find(peer: PeerId): Promise<PeerId | undefined>;
  remove(peer: PeerId): Promise<void>;
}

export class DhtRouter implements Router, LivePeers {
  readonly #node: Libp2p<Services>;
  readonly #table: RoutingTable;
  readonly #provideTargets: ProvideTargets;
  readonly #sync: RecordSync | undefined;
  /** The advertised keys, with their digests, which peers that ask get (record-sync.ts). */
  readonly #keys: KeyDigests;
  readonly #logger: Logger;
  readonly #ttlMs: number;
  readonly #queue: ProvideQueue;
  readonly #bootstrap: Bootstrapper;
  /** Key → when a provide of it last reached a peer. */
  readonly #provided = new Map<string, number>();
  /** Key → when it was withdrawn; its local record is deleted again on each tick for a while. */
  readonly #withdrawn = new Map<string, number>();
  readonly #closing = new AbortController();
  readonly #tick: NodeJS.Timeout;
  /** Where the gauges were registered, to take them out on close. */
  #metrics: { registry: Registry; names: string[] } | undefined;
  #joined = false;
  #backloggedTicks = 0;
  #succeeded = 0;
  #failed = 0;
  #lookupsLocal = 0;
  #lookupsNetwork = 0;
  #lookupsCounter: Counter<'path'> | undefined;

  /** This node's libp2p peer id. */
  readonly peerId: string;

  static async create(init: DhtRouterInit): Promise<DhtRouter> {
    const logger = init.logger.with({ component: 'dht' });
    const clientMode = init.clientMode ?? false;
    const ttlMs = init.advertiseTtlMs ?? DEFAULT_TTL_MS;
    if (!(ttlMs >= 100)) throw new Error(`advertise TTL ${ttlMs} ms is too short`);
    const targets = (init.bootstrapPeers ?? []).map(parseBootstrapPeer);
    const listen = init.listen ?? (clientMode ? undefined : { host: undefined, port: DEFAULT_PORT });
    const privateKey = await loadOrCreatePeerKey(init.dataDir, logger);

    const node = await createLibp2p({
      privateKey,
      // kad-dht takes it from libp2p's components: provider records and their lookups go through it.
      datastore: init.datastore ?? new IndexedDatastore(),
      addresses: {
        listen: listen === undefined ? [] : [listenMultiaddr(listen)],
        announceFilter: reachableAddresses,
      },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      ...(init.networkKey !== undefined && { connectionProtector: preSharedKey({ psk: pnetKeyBytes(init.networkKey) }) }),
      services: {
        identify: identify(),
        ping: ping(),
        dht: kadDHT({
          protocol: DHT_PROTOCOL,
          // Explicit, else a node stays a client until it sees a public address, which pods never have.
          clientMode,
          peerInfoMapper: reachablePeerInfo,
          // A lookup with no peers ends at once (the caller goes upstream) instead of waiting for one.
          allowQueryWithZeroPeers: true,
          alpha: init.queryConcurrency ?? DEFAULT_QUERY_CONCURRENCY,
          disjointPaths: 1,
          ...(init.kBucketSize !== undefined && { kBucketSize: init.kBucketSize }),
          reprovide: {
            // Other peers' records are deleted once older than this, checked every `interval`.
            validity: ttlMs,
            interval: cleanupInterval(ttlMs),
            // Re-provide only our own records that expired: a fallback, Shoal re-provides at ttl/2.
            threshold: 0,
            concurrency: 1,
          },
        }),
      },
    });

    const table = (node.services.dht as unknown as { routingTable?: RoutingTable }).routingTable;
    if (typeof table?.remove !== 'function' || typeof table.find !== 'function') {
      await node.stop();
      throw new Error('@libp2p/kad-dht has no routingTable with find/remove: this kad-dht version is not supported');
    }
    let provideTargets: ProvideTargets;
    let sync: RecordSync | undefined;
    const keys = new KeyDigests();
    try {
      provideTargets = provideToTableWhenSmall(node.services.dht, node.peerId);
      if (init.recordSync !== false) sync = await RecordSync.start({
        node,
        dht: node.services.dht,
        keys,
        looked: () => provideTargets.looked,
        // A client is in nobody's table: no provide reaches it, so its copies could never be complete.
        ask: !clientMode,
        isServer: async (peer) => (await node.peerStore.get(peer).catch(() => undefined))?.protocols.includes(DHT_PROTOCOL) === true,
        ...(init.recordSyncIntervalMs !== undefined && { intervalMs: init.recordSyncIntervalMs }),
        ttlMs,
        logger,
      });
    } catch (err) {
      await node.stop();
      throw err;
    }
    return new DhtRouter(node, table, provideTargets, sync, keys, logger, init, targets, listen, ttlMs);
  }

  private constructor(
    node: Libp2p<Services>,
    table: RoutingTable,
    provideTargets: ProvideTargets,
    sync: RecordSync | undefined,
    keys: KeyDigests,
    logger: Logger,
    init: DhtRouterInit,
    targets: ReturnType<typeof parseBootstrapPeer>[],
    listen: ListenAddress | undefined,
    ttlMs: number,
  ) {
    this.#node = node;
    this.#table = table;
    this.#provideTargets = provideTargets;
    this.#sync = sync;
    this.#keys = keys;
    this.#logger = logger;
    this.#ttlMs = ttlMs;
    this.peerId = node.peerId.toString();

    this.#queue = new ProvideQueue({
      concurrency: init.provideConcurrency ?? 8,
      timeoutMs: init.provideTimeoutMs ?? 30_000,
      provide: (key, signal) => this.#provide(key, signal),
      onSettled: (key, err) => {
        if (err === undefined) {
          this.#succeeded++;
          this.#provided.set(key, Date.now());
        } else {
          this.#failed++;
          logger.debug('provide failed', { key, err: err as Error });
        }
      },
    });

    this.#bootstrap = new Bootstrapper({
      targets,
      dnsName: init.bootstrapDns === '' ? undefined : init.bootstrapDns,
      dnsPort: init.bootstrapDnsPort ?? listen?.port ?? DEFAULT_PORT,
      resolver: init.resolver ?? systemResolver,
      dial: async (addr, signal) => (await node.dial(multiaddr(addr), { signal })).remotePeer.toString(),
      isSelf: (ip, port) => this.#isSelf(ip, port),
      isConnected: (peerId) => node.getConnections(peerIdFromString(peerId)).length > 0,
      hasPeers: () => this.#table.size > 0,
      intervalMs: init.bootstrapIntervalMs ?? 30_000,
      retryMs: init.bootstrapRetryMs ?? 1_000,
      dialTimeoutMs: DIAL_TIMEOUT_MS,
      logger,
    });

    table.addEventListener('peer:add', this.#onPeerAdd);
    table.addEventListener('peer:remove', this.#onPeerRemove);
    node.addEventListener('peer:disconnect', this.#onDisconnect);

    this.#tick = setInterval(() => this.#onTick(), cleanupInterval(ttlMs));
    this.#tick.unref();

    if (init.metrics !== undefined) this.#registerGauges(init.metrics);

    this.#bootstrap.start();
    logger.info('peer network started', {
      peerId: this.peerId,
      addresses: this.addresses(),
      mode: init.clientMode === true ? 'client' : 'server',
      networkKey: init.networkKey?.id ?? 'none (open network)',
      bootstrapPeers: targets.length,
      bootstrapDns: init.bootstrapDns ?? '',
      advertiseTtlMs: ttlMs,
    });
  }

  /** This node's addresses, as multiaddrs with its peer id. */
  addresses(): string[] {
    return this.#node.getMultiaddrs().map(String);
  }

  async *lookup(key: string, options: LookupOptions): AsyncGenerator<Provider> {
    const { count, signal } = options;
    if (count <= 0 || signal.aborted || this.#closing.signal.aborted) return;
    const seen = new Set<string>();
    const querySignal = AbortSignal.any([signal, this.#closing.signal]);
    try {
      const cid = keyToCid(key);
      const batches = this.#sync?.complete() === true ? this.#localProviders(this.#sync, cid) : this.#networkProviders(cid, querySignal);
      for await (const batch of batches) {
        const found: Provider[] = [];
        for (const peer of batch) {
          const peerId = peer.id.toString();
          const host = peerId === this.peerId || seen.has(peerId) ? undefined : pickHost(peer.multiaddrs);
          if (host !== undefined) found.push({ peerId, host });
        }
        // The store lists records in key order: the same holder first for everyone.
        for (const { peerId, host } of askOrder(found, this.peerId, key)) {
          seen.add(peerId);
          yield { peerId, host };
          if (seen.size >= count) return;
        }
      }
    } catch (err) {
      if (querySignal.aborted) return;
      this.#logger.warn('lookup failed', { key, err: err as Error });
    }
  }

  advertise(keys: Iterable<string>): void {
    if (this.#closing.signal.aborted) return;
    for (const key of keys) {
      if (!this.#keys.add(key)) continue;
      this.#withdrawn.delete(key);
      // Alone, there is nobody to provide to: joining queues every key.
      if (this.#table.size > 0) this.#queue.enqueue(key, true);
    }
  }

  withdraw(keys: Iterable<string>): void {
    for (const key of keys) {
      if (!this.#keys.delete(key)) continue;
      this.#queue.drop(key);
      this.#provided.delete(key);
      this.#withdrawn.set(key, Date.now());
      this.#forget(key);
    }
  }

  /** A copy: the keys advertised now. */
  advertised(): ReadonlySet<string> {
    return new Set(this.#keys.keys());
  }

  /**
   * Peers connected now that serve the DHT (mirrors; the webhook is a client
   * and does not), each at the host its own addresses name.
   */
  async livePeers(): Promise<Provider[]> {
    const ids = new Map<string, PeerId>();
    for (const connection of this.#node.getConnections()) {
      if (connection.status === 'open') ids.set(connection.remotePeer.toString(), connection.remotePeer);
    }
    const peers: Provider[] = [];
    for (const [peerId, id] of ids) {
      if (peerId === this.peerId) continue;
      const peer = await this.#node.peerStore.get(id).catch(() => undefined);
      if (peer === undefined || !peer.protocols.includes(DHT_PROTOCOL)) continue;
      const host = pickHost(peer.addresses.map((a) => a.multiaddr));
      if (host !== undefined) peers.push({ peerId, host });
    }
    return peers;
  }

  /** Has a peer, or has nobody to join (no bootstrap configured, or it found only this node). */
  ready(): boolean {
    return this.#table.size > 0 || !this.#bootstrap.configured || this.#bootstrap.alone;
  }

  stats(): DhtRouterStats {
    const sync = this.#sync?.stats();
    return {
      peers: this.#table.size,
      advertisedKeys: this.#keys.size,
      pendingProvides: this.#queue.pending,
      providesInFlight: this.#queue.inFlight,
      peakProvidesInFlight: this.#queue.peakInFlight,
      providesSucceeded: this.#succeeded,
      providesFailed: this.#failed,
      providesFromTable: this.#provideTargets.fromTable,
      providesCanUseTable: this.#provideTargets.looked,
      lookupsLocal: this.#lookupsLocal,
      lookupsNetwork: this.#lookupsNetwork,
      recordsComplete: sync?.complete ?? false,
      syncsSucceeded: sync?.syncsSucceeded ?? 0,
      syncsFailed: sync?.syncsFailed ?? 0,
      syncedKeys: sync?.keysReceived ?? 0,
      pushesSucceeded: sync?.pushesSucceeded ?? 0,
      keysPushed: sync?.keysPushed ?? 0,
      pushesFailed: sync?.pushesFailed ?? 0,
    };
  }

  /** Resolves when no provide is queued or running (for tests and benchmarks). */
  async providesIdle(): Promise<void> {
    await this.#queue.idle();
    await this.#sync?.pushesIdle();
  }

  async close(): Promise<void> {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    clearInterval(this.#tick);
    this.#table.removeEventListener('peer:add', this.#onPeerAdd);
    this.#table.removeEventListener('peer:remove', this.#onPeerRemove);
    this.#node.removeEventListener('peer:disconnect', this.#onDisconnect);
    await Promise.all([this.#bootstrap.stop(), this.#queue.close(), this.#sync?.close()]);
    await this.#node.stop();
    this.#unregisterGauges();
    this.#logger.info('peer network stopped', { peerId: this.peerId });
  }

  /** This node's own records of a key: every record of the network when the sync says so. */
  async *#localProviders(sync: RecordSync, cid: CID): AsyncGenerator<PeerInfo[]> {
    this.#lookupsLocal++;
    this.#lookupsCounter?.inc({ path: 'records' });
    const providers: PeerInfo[] = [];
    for (const id of await sync.localProviders(cid)) {
      const peer = await this.#node.peerStore.get(id).catch(() => undefined);
      if (peer !== undefined) providers.push({ id, multiaddrs: peer.addresses.map((a) => a.multiaddr) });
    }
    yield providers;
  }

  /** kad-dht's lookup: its local provider store first, then the network. */
  async *#networkProviders(cid: CID, signal: AbortSignal): AsyncGenerator<PeerInfo[]> {
    this.#lookupsNetwork++;
    this.#lookupsCounter?.inc({ path: 'network' });
    for await (const event of this.#node.services.dht.findProviders(cid, { signal })) {
      if (event.name === 'PROVIDER') yield event.providers;
    }
  }

  /** One provide: a push below K when every peer takes pushes (record-sync.ts), else kad-dht's, which rejects unless the record reached a peer. */
  async #provide(key: string, signal: AbortSignal): Promise<void> {
    if (this.#table.size === 0) throw new Error('no peers');
    const digest = this.#keys.digestOf(key);
    const cid = digest === undefined ? keyToCid(key) : digestToCid(digest);
    // A node that just joined knows a few peers: whether to push is known once it looked around.
    for (const deadline = Date.now() + LOOK_AROUND_WAIT_MS; !this.#provideTargets.looked && Date.now() < deadline; ) await sleep(50, undefined, { signal });
    let reached = 0;
    try {
      if (this.#sync?.canPush() === true) {
        // Every peer gets it in the next push: one stream per peer for all the keys of a burst.
        await this.#sync.recordOwn(cid, signal);
        if (this.#keys.has(key)) this.#sync.push(key);
        return;
      }
      for await (const event of this.#node.services.dht.provide(cid, { signal })) {
        if (event.name === 'PEER_RESPONSE' && event.messageName === 'ADD_PROVIDER') reached++;
      }
      // kad-dht's provide is done when one peer took the record: peers that take pushes get it surely.
      if (this.#keys.has(key)) this.#sync?.push(key);
    } finally {
      // kad-dht wrote our local record before asking the network: undo it if the key was withdrawn meanwhile.
      if (!this.#keys.has(key)) this.#forget(key);
    }
    signal.throwIfAborted();
    if (reached === 0) throw new Error('no peer took the record');
  }

  /** Deletes our local provider record, so kad-dht neither serves nor re-provides it. */
  #forget(key: string): void {
    this.#node.services.dht.cancelReprovide(keyToCid(key)).catch((err: unknown) => {
      this.#logger.debug('could not delete local provider record', { key, err: err as Error });
    });
  }

  /** Re-provides keys whose last provide is half a TTL old (or failed); sweeps withdrawn keys. */
  #onTick(): void {
    const now = Date.now();
    // Work left from earlier ticks, tick after tick: re-provides lag and records may expire first.
    this.#backloggedTicks = this.#queue.pending > 0 ? this.#backloggedTicks + 1 : 0;
    if (this.#backloggedTicks === 3) {
      this.#logger.warn('provide queue is falling behind', { pending: this.#queue.pending, advertised: this.#keys.size, peers: this.#table.size });
    }
    for (const [key, at] of this.#withdrawn) {
      if (now - at > this.#ttlMs + 2 * cleanupInterval(this.#ttlMs)) this.#withdrawn.delete(key);
      else this.#forget(key);
    }
    // Alone, there is nobody to provide to: joining queues every key.
    if (this.#table.size === 0) return;
    for (const key of this.#keys.keys()) {
      const at = this.#provided.get(key);
      if (at === undefined || now - at >= this.#ttlMs / 2) this.#queue.enqueue(key);
    }
  }

  readonly #onPeerAdd = (): void => {
    if (this.#joined) return;
    this.#joined = true;
    this.#logger.info('joined the peer network', { peers: this.#table.size });
    // Records provided while alone reached nobody, and peers that left took ours with them.
    this.#provided.clear();
    for (const key of this.#keys.keys()) this.#queue.enqueue(key);
  };

  readonly #onPeerRemove = (): void => {
    if (this.#table.size > 0 || !this.#joined) return;
    this.#joined = false;
    this.#logger.warn('lost every peer; bootstrapping again');
    this.#bootstrap.trigger();
  };

  /** kad-dht keeps dead peers in its routing table until a bucket overflows: drop them when they stop answering. */
  readonly #onDisconnect = (event: CustomEvent<PeerId>): void => {
    const peer = event.detail;
    void (async () => {
      if (this.#closing.signal.aborted || (await this.#table.find(peer)) === undefined) return;
      try {
        await this.#node.services.ping.ping(peer, { signal: AbortSignal.any([this.#closing.signal, AbortSignal.timeout(PING_TIMEOUT_MS)]) });
      } catch {
        if (this.#closing.signal.aborted) return;
        this.#logger.debug('peer left', { peer: peer.toString() });
        await this.#table.remove(peer);
      }
    })().catch((err: unknown) => this.#logger.debug('peer liveness check failed', { err: err as Error }));
  };

  #isSelf(ip: string, port: number): boolean {
    return this.#node.getMultiaddrs().some((addr) => {
      const own = ipPortOf(addr);
      return own?.ip === ip && own.port === port;
    });
  }

  #registerGauges(registry: Registry): void {
    const gauge = (name: string, help: string, value: () => number) =>
      new Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(value());
        },
      });
    gauge('shoal_peers', 'Peers in the DHT routing table.', () => this.#table.size);
    gauge('shoal_advertised_keys', 'Keys (digests and tags) this node provides in the DHT.', () => this.#keys.size);
    gauge('shoal_dht_provide_queue', 'Provides waiting to be sent to the DHT.', () => this.#queue.pending);
    gauge('shoal_dht_records_complete', 'Whether this node holds every provider record of the network, so lookups are answered from its own (1) or ask the network (0).', () => (this.#sync?.complete() === true ? 1 : 0));
    this.#lookupsCounter = new Counter({
      name: 'shoal_dht_lookups_total',
      help: 'DHT lookups, by how they were answered: from this node\'s own records (records), or by asking the network (network).',
      labelNames: ['path'],
      registers: [registry],
    });
    const livePeers = () => this.livePeers();
    new Gauge({
      name: 'shoal_live_peers',
      help: 'Mirrors connected now: the set each blob\'s upstream downloader is picked from (with this node).',
      registers: [registry],
      async collect() {
        this.set((await livePeers()).length);
      },
    });
    this.#metrics = { registry, names: ['shoal_peers', 'shoal_advertised_keys', 'shoal_dht_provide_queue', 'shoal_dht_records_complete', 'shoal_dht_lookups_total', 'shoal_live_peers'] };
  }

  #unregisterGauges(): void {
    for (const name of this.#metrics?.names ?? []) this.#metrics?.registry.removeSingleMetric(name);
  }
}

/** How often expired records are swept and due re-provides queued: a tenth of the TTL, at most a minute. */
function cleanupInterval(ttlMs: number): number {
  return Math.min(Math.max(ttlMs / 10, 10), 60_000);
}

function listenMultiaddr(listen: ListenAddress): string {
  const host = listen.host ?? '0.0.0.0';
  const family = isIP(host);
  if (family === 0) throw new Error(`router listen host "${host}" must be an IP address`);
  return `/${family === 6 ? 'ip6' : 'ip4'}/${host}/tcp/${listen.port}`;
}
