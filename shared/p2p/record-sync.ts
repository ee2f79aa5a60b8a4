/**
 * In a network smaller than K, every node holds every peer's provider
 * records, and knows it; its lookups are then answered from its own records:
 * a hit at once, and a miss at once and without asking anybody.
 *
 * Two messages on `/shoal/records/1.0.0` (record-sync-wire.ts):
 * - Pull. When a peer enters the routing table, and every `intervalMs`
 *   after, a node asks it for the keys it advertises and stores them as that
 *   peer's records, as an ADD_PROVIDER from it would. A repeat costs a header
 *   when the keys are unchanged (a fingerprint), and brings them all once the
 *   last full copy is half a TTL old, so the records do not lapse. This is
 *   how a node that joins or restarts (its store is in memory) gets the
 *   records provided before it came.
 * - Push. Once every table peer has answered a pull, a provide below K is a
 *   push: the keys advertised in a burst go to every table peer in one
 *   stream each, where kad-dht sends an ADD_PROVIDER per key and peer. A
 *   push that fails is sent again while the peer stays in the table
 *   (push-outbox.ts). A table with a peer that does not answer pulls (an
 *   older version) makes provides go through kad-dht, which reaches it.
 *
 * The node's own records are complete, and a miss may be trusted, when:
 * - its routing table holds 1 to K-1 peers and kad-dht's first self-query has
 *   ended, so the table is every DHT server it can learn of (small-network.ts);
 * - it holds a copy, checked within the last two intervals, of every table
 *   peer's keys, and each of those peers' tables, as the peer last said (in
 *   an answer, or a push it sends whenever its table changes), holds this
 *   node (so the peer's pushes reach it) and nobody this node does not know.
 * Otherwise a lookup asks the network as kad-dht does. What this leaves out:
 * a push still on its way (milliseconds after a pull, or until a failing
 * peer's retry), a peer that this node and all of its peers have not met yet,
 * and a peer that dropped this node from its table since its last answer.
 * Each costs a miss, which goes upstream, as any miss does.
 */
import type { Connection, PeerId, Stream } from '@libp2p/interface';
import type { CID } from 'multiformats/cid';
import type { Logger } from '../log.ts';
import { digestToCid } from './cid.ts';
import { PushOutbox, type PushOutboxStats } from './push-outbox.ts';
import {
  ANSWER_HEAD_BYTES,
  answerBytes,
  decodeAnswer,
  decodeMessage,
  encodeAnswer,
  encodePull,
  encodePush,
  equalBytes,
  MESSAGE_HEAD_BYTES,
  messageBytes,
  peerHash,
  PUSH_ACK,
  SyncProtocolError,
  type KeyDigests,
  type TableView,
  withKeys,
} from './record-sync-wire.ts';
import { exchange, readAll, sendAll } from './stream-bytes.ts';

export const RECORD_SYNC_PROTOCOL = '/shoal/records/1.0.0';

/** The parts of kad-dht 16's internals this relies on (checked at install). */
interface KadTable extends EventTarget {
  readonly size: number;
  readonly kBucketSize: number;
  find(peer: PeerId): Promise<PeerId | undefined>;
  closestPeers(kadId: Uint8Array, options: { count: number }): PeerId[];
  /** Adds a peer that talks to this node (queued; pings the oldest when a bucket is full). */
  queueRoutingTableUpdate(peer: PeerId): void;
}
interface KadProviders {
  addProvider(cid: CID, provider: PeerId, options?: { signal?: AbortSignal }): Promise<void>;
  getProviders(cid: CID): Promise<PeerId[]>;
}
interface KadInternals {
  routingTable: KadTable;
  providers: KadProviders;
}

/** What the sync needs of the libp2p node. */
export interface SyncNode {
  readonly peerId: PeerId;
  handle(protocol: string, handler: (stream: Stream, connection: Connection) => void | Promise<void>, options: { maxInboundStreams: number }): Promise<void>;
  unhandle(protocol: string): Promise<void>;
  dialProtocol(peer: PeerId, protocol: string, options: { signal: AbortSignal }): Promise<Stream>;
}

export interface RecordSyncInit {
  node: SyncNode;
  /** kad-dht's service. */
  dht: unknown;
  /** The keys this node advertises, sent to peers that ask. */
  keys: KeyDigests;
  /** Whether kad-dht's first self-query has ended (small-network.ts). */
  looked: () => boolean;
  /** Ask peers for their keys (false: a client, whose copies could never be complete). */
  ask: boolean;
  /** Whether a peer serves the DHT (its identify said so): only such a peer is put in the table when it writes to this node. */
  isServer: (peer: PeerId) => Promise<boolean>;
  /** Time between checks of each peer's keys. Default 30 s, at most a quarter of the TTL. */
  intervalMs?: number;
  /** How long records live: a full copy is asked for once half of it passed. */
  ttlMs: number;
  /** Most keys taken from one peer's answer. Default 1,000,000 (32 MB). */
  maxKeys?: number;
  logger: Logger;
}

export interface RecordSyncStats extends PushOutboxStats {
  /** Whether a miss may be answered from this node's own records now. */
  readonly complete: boolean;
  readonly syncsSucceeded: number;
  readonly syncsFailed: number;
  /** Keys stored from peers' answers (a full copy counts all its keys) and pushes. */
  readonly keysReceived: number;
}

/** What a peer said last. */
interface PeerCopy {
  /** Its routing table as it last said, in an answer or a push: the newest version wins. */
  readonly table: TableView;
  readonly fingerprint: Uint8Array;
  /** When its keys were last stored whole. */
  readonly fullAt: number;
  /** When it last answered a pull. */
  readonly checkedAt: number;
}

const DEFAULT_INTERVAL_MS = 30_000;
const DEFAULT_MAX_KEYS = 1_000_000;
const EXCHANGE_TIMEOUT_MS = 10_000;
const FIRST_RETRY_MS = 500;
/** A table peer's removal: the others' tables may still list it, ask them again once the table settled. */
const RECHECK_AFTER_REMOVE_MS = 500;
/** Records stored between checks of the exchange's signal. */
const STORE_BATCH = 1024;
const ANY_KAD_ID = new Uint8Array(32);

function isKadInternals(dht: unknown): dht is KadInternals {
  const d = dht as Partial<KadInternals> | undefined;
  return (
    typeof d?.routingTable?.find === 'function' &&
    typeof d.routingTable.closestPeers === 'function' &&
    typeof d.routingTable.queueRoutingTableUpdate === 'function' &&
    typeof d.routingTable.kBucketSize === 'number' &&
    typeof d.providers?.addProvider === 'function' &&
    typeof d.providers.getProviders === 'function'
  );
}

export class RecordSync {
  readonly #init: RecordSyncInit;
  readonly #table: KadTable;
  readonly #providers: KadProviders;
  readonly #intervalMs: number;
  readonly #maxKeys: number;
  readonly #selfHash: string;
  readonly #copies = new Map<string, PeerCopy>();
  /** Set anew when a peer enters the table (from #epoch): an answer from before it left or came back is not kept. */
  readonly #generation = new Map<string, number>();
  #epoch = 0;
  /** This node's table's version (record-sync-wire.ts): the time it started, then one more per change. */
  #tableVersion = Date.now();
  /** Per peer: its next check, and how long the wait after a failure was. */
  readonly #scheduled = new Map<string, { timer: NodeJS.Timeout; backoffMs: number }>();
  readonly #running = new Set<string>();
  /** Checks asked for while one of the same peer ran: run once it ends. */
  readonly #again = new Set<string>();
  readonly #outbox: PushOutbox;
  readonly #closing = new AbortController();
  readonly #tick: NodeJS.Timeout | undefined;
  #recheck: NodeJS.Timeout | undefined;
  /** The routing table's peers and their hashes, listed again after it changed: asked on every provide and lookup. */
  #peers: { ids: PeerId[]; hashes: Set<string> } | undefined;
  #succeeded = 0;
  #failed = 0;
  #keysReceived = 0;

  /** Installs the protocol handler; throws if this kad-dht's internals are not the ones it knows. */
  static async start(init: RecordSyncInit): Promise<RecordSync> {
    if (!isKadInternals(init.dht)) throw new Error('@libp2p/kad-dht internals (routingTable, providers) not found: this kad-dht version is not supported');
    const sync = new RecordSync(init, init.dht);
    try {
      await init.node.handle(RECORD_SYNC_PROTOCOL, (stream, connection) => sync.#answer(stream, connection), { maxInboundStreams: 32 });
    } catch (err) {
      await sync.close();
      throw err;
    }
    return sync;
  }

  private constructor(init: RecordSyncInit, dht: KadInternals) {
    this.#init = init;
    this.#table = dht.routingTable;
    this.#providers = dht.providers;
    this.#intervalMs = init.intervalMs ?? Math.min(DEFAULT_INTERVAL_MS, init.ttlMs / 4);
    this.#maxKeys = init.maxKeys ?? DEFAULT_MAX_KEYS;
    this.#selfHash = peerHash(init.node.peerId.toString());
    this.#outbox = new PushOutbox({
      send: (peer, keys, signal) => this.#pushTo(peer, keys, signal),
      inTable: (peer) => this.#tablePeers().hashes.has(peerHash(peer.toString())),
      maxRetryMs: this.#intervalMs,
      logger: init.logger,
    });
    this.#table.addEventListener('peer:add', this.#onPeerAdd);
    this.#table.addEventListener('peer:remove', this.#onPeerRemove);
    if (!init.ask) return;
    this.#tick = setInterval(() => {
      for (const peer of this.#tablePeers().ids) this.#schedule(peer, Math.random() * Math.min(1_000, this.#intervalMs / 10));
    }, this.#intervalMs);
    this.#tick.unref();
    for (const peer of this.#tablePeers().ids) this.#schedule(peer, 0);
  }

  /** Whether this node's own records hold every record of the network (the rules above). */
  complete(): boolean {
    const { hashes } = this.#tablePeers();
    return this.#everyTablePeer((copy) => {
      const peers = copy.table.peers;
      return peers !== undefined && peers.includes(this.#selfHash) && peers.every((h) => h === this.#selfHash || hashes.has(h));
    });
  }

  /**
   * Whether a provide may be a push: the network is smaller than K and every
   * table peer answered lately, so every one of them takes pushes (a peer of a
   * version without them gets kad-dht's ADD_PROVIDER instead).
   */
  canPush(): boolean {
    return this.#everyTablePeer(() => true);
  }

  /** Writes this node's own record of a key, as kad-dht's provide does before it asks the network. */
  recordOwn(cid: CID, signal: AbortSignal): Promise<void> {
    return this.#providers.addProvider(cid, this.#init.node.peerId, { signal });
  }

  /**
   * Sends a key this node now advertises to every table peer that speaks the
   * protocol, in the next push (unless withdrawn by then). Also after kad-dht's
   * provide, which counts as done when one peer took it: a push is retried.
   */
  push(key: string): void {
    if (!this.#init.ask) return;
    this.#outbox.add(
      this.#tablePeers().ids.filter((peer) => this.#copies.has(peer.toString())),
      key,
    );
  }

  /** Resolves when every peer got its pushes, or is waiting to be tried again. */
  pushesIdle(): Promise<void> {
    return this.#outbox.idle();
  }

  /** The providers this node's own records name for a key. */
  localProviders(cid: CID): Promise<PeerId[]> {
    return this.#providers.getProviders(cid);
  }

  stats(): RecordSyncStats {
    return { complete: this.complete(), syncsSucceeded: this.#succeeded, syncsFailed: this.#failed, keysReceived: this.#keysReceived, ...this.#outbox.stats() };
  }

  async close(): Promise<void> {
    this.#closing.abort();
    this.#outbox.close();
    clearInterval(this.#tick);
    clearTimeout(this.#recheck);
    for (const { timer } of this.#scheduled.values()) clearTimeout(timer);
    this.#scheduled.clear();
    this.#table.removeEventListener('peer:add', this.#onPeerAdd);
    this.#table.removeEventListener('peer:remove', this.#onPeerRemove);
    await this.#init.node.unhandle(RECORD_SYNC_PROTOCOL).catch(() => {});
  }

  /** Below K, looked around, and every table peer's copy checked lately and passing `ok`. */
  #everyTablePeer(ok: (copy: PeerCopy) => boolean): boolean {
    const size = this.#table.size;
    if (size === 0 || size >= this.#table.kBucketSize || !this.#init.looked()) return false;
    const now = Date.now();
    for (const peer of this.#tablePeers().ids) {
      const copy = this.#copies.get(peer.toString());
      if (copy === undefined || now - copy.checkedAt > 2 * this.#intervalMs || !ok(copy)) return false;
    }
    return true;
  }

  #tablePeers(): { ids: PeerId[]; hashes: Set<string> } {
    // Also when no event said so yet: kad-dht puts a peer in its bucket before it dispatches peer:add.
    if (this.#peers === undefined || this.#peers.ids.length !== this.#table.size) {
      const ids = this.#table.size === 0 ? [] : this.#table.closestPeers(ANY_KAD_ID, { count: this.#table.size });
      this.#peers = { ids, hashes: new Set(ids.map((id) => peerHash(id.toString()))) };
    }
    return this.#peers;
  }

  /** This node's table as a peer sees it: no list from K peers on. */
  #tableView(): TableView {
    return { peers: this.#table.size >= this.#table.kBucketSize ? undefined : [...this.#tablePeers().hashes], version: this.#tableVersion };
  }

  readonly #onPeerAdd = (event: Event): void => {
    const peer = (event as CustomEvent<PeerId>).detail;
    this.#generation.set(peer.toString(), ++this.#epoch);
    this.#changed();
    if (this.#init.ask) this.#schedule(peer, 0);
  };

  readonly #onPeerRemove = (event: Event): void => {
    const id = (event as CustomEvent<PeerId>).detail.toString();
    this.#generation.delete(id);
    this.#changed();
    this.#outbox.drop(id);
    const scheduled = this.#scheduled.get(id);
    clearTimeout(scheduled?.timer);
    this.#scheduled.delete(id);
    this.#copies.delete(id);
    if (!this.#init.ask) return;
    clearTimeout(this.#recheck);
    this.#recheck = setTimeout(() => {
      for (const peer of this.#tablePeers().ids) this.#schedule(peer, 0);
    }, RECHECK_AFTER_REMOVE_MS);
    this.#recheck.unref();
  };

  /** The table changed: every peer hears of the new one. */
  #changed(): void {
    this.#peers = undefined;
    this.#tableVersion = Math.max(this.#tableVersion + 1, Date.now());
    // A client sends nothing: it is in no table, and a message would put it in one (#answer).
    if (this.#init.ask) this.#outbox.add(this.#tablePeers().ids, undefined);
  }

  /** Asks `peer` after `delayMs`, unless a check of it is due sooner; one asked for while one runs runs after it. */
  #schedule(peer: PeerId, delayMs: number, backoffMs = 0): void {
    const id = peer.toString();
    if (this.#closing.signal.aborted) return;
    if (this.#running.has(id)) {
      if (backoffMs === 0) this.#again.add(id);
      return;
    }
    const pending = this.#scheduled.get(id);
    if (pending !== undefined) {
      if (backoffMs === 0 && pending.backoffMs === 0) return;
      clearTimeout(pending.timer);
    }
    const timer = setTimeout(() => {
      this.#scheduled.delete(id);
      void this.#check(peer, backoffMs);
    }, delayMs);
    timer.unref();
    this.#scheduled.set(id, { timer, backoffMs });
  }

  async #check(peer: PeerId, backoffMs: number): Promise<void> {
    const id = peer.toString();
    if (!this.#tablePeers().hashes.has(peerHash(id))) return;
    this.#running.add(id);
    let retry = false;
    try {
      const copy = await this.#ask(peer);
      this.#succeeded++;
      // Not in its table yet: its pushes do not reach this node, ask again soon.
      retry = copy !== undefined && copy.table.peers?.includes(this.#selfHash) !== true;
    } catch (err) {
      if (this.#closing.signal.aborted) return;
      this.#failed++;
      this.#copies.delete(id);
      retry = true;
      this.#init.logger.debug('could not get a peer\'s records', { peer: id, err: err as Error });
    } finally {
      this.#running.delete(id);
    }
    if (this.#again.delete(id)) {
      this.#schedule(peer, 0);
      return;
    }
    if (!retry || !this.#tablePeers().hashes.has(peerHash(id))) return;
    const next = Math.min(backoffMs === 0 ? FIRST_RETRY_MS : backoffMs * 2, this.#intervalMs);
    this.#schedule(peer, next, next);
  }

  /** One pull from `peer`: its table, and its keys stored when they changed or the copy is getting old. Undefined: the table changed meanwhile. */
  async #ask(peer: PeerId): Promise<PeerCopy | undefined> {
    const id = peer.toString();
    const generation = this.#generation.get(id);
    const previous = this.#copies.get(id);
    const now = Date.now();
    const fresh = previous !== undefined && now - previous.fullAt < this.#init.ttlMs / 2;
    const signal = AbortSignal.any([this.#closing.signal, AbortSignal.timeout(EXCHANGE_TIMEOUT_MS)]);
    const stream = await this.#init.node.dialProtocol(peer, RECORD_SYNC_PROTOCOL, { signal });
    const bytes = await exchange(stream, encodePull(fresh ? previous.fingerprint : undefined), ANSWER_HEAD_BYTES, (head) => answerBytes(head, this.#maxKeys), signal);
    const answer = decodeAnswer(bytes, this.#maxKeys);
    if (answer.digests === undefined && !fresh) throw new SyncProtocolError('the peer sent no keys for a request of all of them');
    await this.#store(answer.digests ?? [], peer, signal);
    // Left or came back while this ran: what it said is about the table before.
    if (this.#generation.get(id) !== generation) return undefined;
    // A push may have brought a newer table while this answer came.
    const latest = this.#copies.get(id)?.table;
    const copy: PeerCopy = {
      table: latest !== undefined && latest.version > answer.table.version ? latest : answer.table,
      fingerprint: answer.fingerprint,
      fullAt: fresh && answer.digests === undefined ? previous.fullAt : now,
      checkedAt: now,
    };
    this.#copies.set(id, copy);
    return copy;
  }

  /** Stores keys as records of `peer`, as its ADD_PROVIDER would. */
  async #store(digests: readonly Uint8Array[], peer: PeerId, signal: AbortSignal): Promise<void> {
    for (const [i, digest] of digests.entries()) {
      if (i % STORE_BATCH === 0) signal.throwIfAborted();
      await this.#providers.addProvider(digestToCid(digest), peer);
    }
    this.#keysReceived += digests.length;
  }

  /** One push to `peer`: this node's table, and the keys not withdrawn since they were queued. */
  async #pushTo(peer: PeerId, keys: readonly string[], closing: AbortSignal): Promise<number> {
    const digests = keys.flatMap((key) => this.#init.keys.digestOf(key) ?? []);
    const signal = AbortSignal.any([closing, AbortSignal.timeout(EXCHANGE_TIMEOUT_MS)]);
    const stream = await this.#init.node.dialProtocol(peer, RECORD_SYNC_PROTOCOL, { signal });
    const ack = await exchange(stream, encodePush(this.#tableView(), this.#init.keys.fingerprint, digests), PUSH_ACK.length, () => PUSH_ACK.length, signal);
    if (ack.length !== 1 || ack[0] !== PUSH_ACK[0]) throw new SyncProtocolError(`push answered with ${ack.length} bytes`);
    return digests.length;
  }

  async #answer(stream: Stream, connection: Connection): Promise<void> {
    const signal = AbortSignal.any([this.#closing.signal, AbortSignal.timeout(EXCHANGE_TIMEOUT_MS)]);
    const peer = connection.remotePeer;
    try {
      const message = decodeMessage(await readAll(stream, MESSAGE_HEAD_BYTES, messageBytes, signal));
      // A peer that talks to this node belongs in its table (kad-dht adds peers on new connections only);
      // only servers send these messages.
      if (this.#table.size < this.#table.kBucketSize && !this.#tablePeers().hashes.has(peerHash(peer.toString())) && (await this.#init.isServer(peer))) {
        this.#table.queueRoutingTableUpdate(peer);
      }
      if (message.kind === 'push') {
        // Only a peer itself says what it provides, as with kad-dht's ADD_PROVIDER.
        await this.#store(message.digests, peer, signal);
        const copy = this.#copies.get(peer.toString());
        if (copy !== undefined) {
          // Its pushes since the copy were all of its new keys: the copy stays current, and the next pull is a header.
          const fingerprint = equalBytes(withKeys(copy.fingerprint, message.digests), message.fingerprint) ? message.fingerprint : copy.fingerprint;
          const table = message.table.version > copy.table.version ? message.table : copy.table;
          this.#copies.set(peer.toString(), { ...copy, table, fingerprint });
        }
        await sendAll(stream, [PUSH_ACK], signal);
      } else {
        await sendAll(stream, encodeAnswer(this.#init.keys, message.fingerprint, this.#tableView()), signal);
      }
      await stream.close({ signal });
    } catch (err) {
      stream.abort(err as Error);
      if (!this.#closing.signal.aborted) this.#init.logger.debug('could not answer a peer\'s records message', { peer: peer.toString(), err: err as Error });
    }
  }
}
