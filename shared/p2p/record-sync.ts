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
 *   push that fails is made up by the peer's next pull. A table with a peer
 *   that does not answer pulls (an older version) makes provides go through
 *   kad-dht, which reaches it.
 *
 * The node's own records are complete, and a miss may be trusted, when:
 * - its routing table holds 1 to K-1 peers and kad-dht's first self-query has
 *   ended, so the table is every DHT server it can learn of (small-network.ts);
 * - it holds a copy, checked within the last two intervals, of every table
 *   peer's keys, and each of those peers said then that this node is in its
 *   routing table (so the peer's later pushes and provides reach it) and that
 *   its table is no larger than this node's (the peer knows nobody this node
 *   does not).
 * Otherwise a lookup asks the network as kad-dht does. What this leaves out:
 * a push still on its way (milliseconds after a pull), and a peer that this
 * node and all of its peers have not met yet. Both cost a miss, which goes
 * upstream, as any miss does.
 */
import type { Connection, PeerId, Stream } from '@libp2p/interface';
import type { CID } from 'multiformats/cid';
import type { Logger } from '../log.ts';
import { digestToCid } from './cid.ts';
import { answerBytes, decodeDigests, decodeHeader, decodeMessage, encodeAnswer, encodePull, encodePush, HEADER_BYTES, MESSAGE_HEAD_BYTES, messageBytes, PUSH_ACK, SyncProtocolError, type KeyDigests } from './record-sync-wire.ts';

export const RECORD_SYNC_PROTOCOL = '/shoal/records/1.0.0';

/** The parts of kad-dht 16's internals this relies on (checked at install). */
interface KadTable extends EventTarget {
  readonly size: number;
  readonly kBucketSize: number;
  find(peer: PeerId): Promise<PeerId | undefined>;
  closestPeers(kadId: Uint8Array, options: { count: number }): PeerId[];
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
  /** Time between checks of each peer's keys. Default 30 s. */
  intervalMs?: number;
  /** How long records live: a full copy is asked for once half of it passed. */
  ttlMs: number;
  /** Most keys taken from one peer. Default 1,000,000 (32 MB). */
  maxKeys?: number;
  logger: Logger;
}

export interface RecordSyncStats {
  /** Whether a miss may be answered from this node's own records now. */
  readonly complete: boolean;
  readonly syncsSucceeded: number;
  readonly syncsFailed: number;
  /** Keys stored from peers' answers (a full copy counts all its keys) and pushes. */
  readonly keysReceived: number;
  /** Pushes that a peer stored, and the keys in them (counted once per peer). */
  readonly pushesSucceeded: number;
  readonly keysPushed: number;
  /** Pushes to a peer that failed (the peer's next pull brings the keys). */
  readonly pushesFailed: number;
}

/** What a peer said when last asked. */
interface PeerCopy {
  readonly inTable: boolean;
  readonly tableSize: number;
  readonly fingerprint: Uint8Array;
  /** When its keys were last stored whole. */
  readonly fullAt: number;
  readonly checkedAt: number;
}

const DEFAULT_INTERVAL_MS = 30_000;
/** Keys in one push: 512 KiB. */
const MAX_PUSH_KEYS = 16_384;
const DEFAULT_MAX_KEYS = 1_000_000;
const EXCHANGE_TIMEOUT_MS = 10_000;
const FIRST_RETRY_MS = 500;
/** A table peer's removal: the others' sizes are stale, ask them again once the table settled. */
const RECHECK_AFTER_REMOVE_MS = 500;
const ANY_KAD_ID = new Uint8Array(32);

function isKadInternals(dht: unknown): dht is KadInternals {
  const d = dht as Partial<KadInternals> | undefined;
  return (
    typeof d?.routingTable?.find === 'function' &&
    typeof d.routingTable.closestPeers === 'function' &&
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
  readonly #copies = new Map<string, PeerCopy>();
  /** Per peer: its next check, and how long the wait after a failure was. */
  readonly #scheduled = new Map<string, { timer: NodeJS.Timeout; backoffMs: number }>();
  readonly #running = new Set<string>();
  readonly #closing = new AbortController();
  readonly #tick: NodeJS.Timeout | undefined;
  #recheck: NodeJS.Timeout | undefined;
  /** The routing table's peers, listed again after the table changed: asked on every provide and lookup. */
  #peers: PeerId[] | undefined;
  #succeeded = 0;
  #failed = 0;
  #keysReceived = 0;
  #keysPushed = 0;
  #pushesSucceeded = 0;
  #pushesFailed = 0;
  /** Digests waiting for the next push, and the push running now. */
  #toPush: Uint8Array[] = [];
  #pushing: Promise<void> | undefined;

  /** Installs the protocol handler; throws if this kad-dht's internals are not the ones it knows. */
  static async start(init: RecordSyncInit): Promise<RecordSync> {
    if (!isKadInternals(init.dht)) throw new Error('@libp2p/kad-dht internals (routingTable, providers) not found: this kad-dht version is not supported');
    const sync = new RecordSync(init, init.dht);
    await init.node.handle(RECORD_SYNC_PROTOCOL, (stream, connection) => sync.#answer(stream, connection), { maxInboundStreams: 32 });
    return sync;
  }

  private constructor(init: RecordSyncInit, dht: KadInternals) {
    this.#init = init;
    this.#table = dht.routingTable;
    this.#providers = dht.providers;
    this.#intervalMs = init.intervalMs ?? DEFAULT_INTERVAL_MS;
    this.#maxKeys = init.maxKeys ?? DEFAULT_MAX_KEYS;
    this.#table.addEventListener('peer:add', this.#onPeerAdd);
    this.#table.addEventListener('peer:remove', this.#onPeerRemove);
    if (!init.ask) return;
    this.#tick = setInterval(() => {
      for (const peer of this.#tablePeers()) this.#schedule(peer, Math.random() * Math.min(1_000, this.#intervalMs / 10));
    }, this.#intervalMs);
    this.#tick.unref();
    for (const peer of this.#tablePeers()) this.#schedule(peer, 0);
  }

  /** Whether this node's own records hold every record of the network (the rules above). */
  complete(): boolean {
    return this.#everyTablePeer((copy, size) => copy.inTable && copy.tableSize <= size);
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

  /** Sends a key this node now advertises to every table peer, in the next push. */
  push(digest: Uint8Array): void {
    this.#toPush.push(digest);
    this.#startPushing();
  }

  /** Resolves when no push is waiting or running. */
  async pushesIdle(): Promise<void> {
    while (this.#pushing !== undefined) await this.#pushing;
  }

  /** The providers this node's own records name for a key. */
  localProviders(cid: CID): Promise<PeerId[]> {
    return this.#providers.getProviders(cid);
  }

  stats(): RecordSyncStats {
    return {
      complete: this.complete(),
      syncsSucceeded: this.#succeeded,
      syncsFailed: this.#failed,
      keysReceived: this.#keysReceived,
      pushesSucceeded: this.#pushesSucceeded,
      keysPushed: this.#keysPushed,
      pushesFailed: this.#pushesFailed,
    };
  }

  async close(): Promise<void> {
    this.#closing.abort();
    this.#toPush = [];
    clearInterval(this.#tick);
    clearTimeout(this.#recheck);
    for (const { timer } of this.#scheduled.values()) clearTimeout(timer);
    this.#scheduled.clear();
    this.#table.removeEventListener('peer:add', this.#onPeerAdd);
    this.#table.removeEventListener('peer:remove', this.#onPeerRemove);
    await this.#init.node.unhandle(RECORD_SYNC_PROTOCOL).catch(() => {});
  }

  /** Below K, looked around, and every table peer's copy checked lately and passing `ok`. */
  #everyTablePeer(ok: (copy: PeerCopy, tableSize: number) => boolean): boolean {
    const size = this.#table.size;
    if (size === 0 || size >= this.#table.kBucketSize || !this.#init.looked()) return false;
    const now = Date.now();
    for (const peer of this.#tablePeers()) {
      const copy = this.#copies.get(peer.toString());
      if (copy === undefined || now - copy.checkedAt > 2 * this.#intervalMs || !ok(copy, size)) return false;
    }
    return true;
  }

  #startPushing(): void {
    if (this.#pushing !== undefined || this.#closing.signal.aborted) return;
    this.#pushing = this.#pushAll().finally(() => {
      this.#pushing = undefined;
      if (this.#toPush.length > 0) this.#startPushing();
    });
  }

  /** Pushes what waits, batch after batch: keys advertised while one is on its way go in the next. */
  async #pushAll(): Promise<void> {
    // A burst of provides in one turn of the event loop goes in one push.
    await new Promise((resolve) => setImmediate(resolve));
    while (this.#toPush.length > 0 && !this.#closing.signal.aborted) {
      const batch = this.#toPush.splice(0, MAX_PUSH_KEYS);
      await Promise.all(
        this.#tablePeers().map(async (peer) => {
          try {
            await this.#pushTo(peer, batch);
            this.#pushesSucceeded++;
            this.#keysPushed += batch.length;
          } catch (err) {
            if (this.#closing.signal.aborted) return;
            this.#pushesFailed++;
            this.#init.logger.debug('could not push keys to a peer; its next pull brings them', { peer: peer.toString(), keys: batch.length, err: err as Error });
          }
        }),
      );
    }
  }

  async #pushTo(peer: PeerId, digests: readonly Uint8Array[]): Promise<void> {
    const signal = AbortSignal.any([this.#closing.signal, AbortSignal.timeout(EXCHANGE_TIMEOUT_MS)]);
    const stream = await this.#init.node.dialProtocol(peer, RECORD_SYNC_PROTOCOL, { signal });
    try {
      const reading = readAll(stream, PUSH_ACK.length, () => PUSH_ACK.length, signal);
      reading.catch(() => {});
      if (!stream.send(encodePush(digests))) await drained(stream, signal);
      await stream.close({ signal });
      const ack = await reading;
      if (ack.length !== 1 || ack[0] !== PUSH_ACK[0]) throw new SyncProtocolError(`push answered with ${ack.length} bytes`);
    } catch (err) {
      stream.abort(err as Error);
      throw err;
    }
  }

  #tablePeers(): PeerId[] {
    this.#peers ??= this.#table.size === 0 ? [] : this.#table.closestPeers(ANY_KAD_ID, { count: this.#table.size });
    return this.#peers;
  }

  readonly #onPeerAdd = (event: Event): void => {
    this.#peers = undefined;
    if (this.#init.ask) this.#schedule((event as CustomEvent<PeerId>).detail, 0);
  };

  readonly #onPeerRemove = (event: Event): void => {
    this.#peers = undefined;
    if (!this.#init.ask) return;
    this.#copies.delete((event as CustomEvent<PeerId>).detail.toString());
    clearTimeout(this.#recheck);
    this.#recheck = setTimeout(() => {
      for (const peer of this.#tablePeers()) this.#schedule(peer, 0);
    }, RECHECK_AFTER_REMOVE_MS);
    this.#recheck.unref();
  };

  /** Asks `peer` after `delayMs`, unless a check of it is due sooner or running. */
  #schedule(peer: PeerId, delayMs: number, backoffMs = 0): void {
    const id = peer.toString();
    if (this.#closing.signal.aborted || this.#running.has(id)) return;
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
    this.#running.add(id);
    let retry = false;
    try {
      const copy = await this.#ask(peer);
      this.#succeeded++;
      // Not in its table yet: its provides do not reach this node, ask again soon.
      retry = !copy.inTable;
    } catch (err) {
      if (this.#closing.signal.aborted) return;
      this.#failed++;
      this.#copies.delete(id);
      retry = true;
      this.#init.logger.debug('could not get a peer\'s records', { peer: id, err: err as Error });
    } finally {
      this.#running.delete(id);
    }
    if (!retry || (await this.#table.find(peer)) === undefined) return;
    const next = Math.min(backoffMs === 0 ? FIRST_RETRY_MS : backoffMs * 2, this.#intervalMs);
    this.#schedule(peer, next, next);
  }

  /** One exchange with `peer`: its header, and its keys stored when they changed or the copy is getting old. */
  async #ask(peer: PeerId): Promise<PeerCopy> {
    const id = peer.toString();
    const previous = this.#copies.get(id);
    const now = Date.now();
    const fresh = previous !== undefined && now - previous.fullAt < this.#init.ttlMs / 2;
    const signal = AbortSignal.any([this.#closing.signal, AbortSignal.timeout(EXCHANGE_TIMEOUT_MS)]);
    const stream = await this.#init.node.dialProtocol(peer, RECORD_SYNC_PROTOCOL, { signal });
    let answer: Uint8Array;
    try {
      // Reading from the start: the answer may come while the request is still closing.
      const reading = readAll(stream, HEADER_BYTES, (head) => answerBytes(decodeHeader(head, this.#maxKeys)), signal);
      reading.catch(() => {});
      stream.send(encodePull(fresh ? previous.fingerprint : undefined));
      await stream.close({ signal });
      answer = await reading;
    } catch (err) {
      stream.abort(err as Error);
      throw err;
    }
    const header = decodeHeader(answer, this.#maxKeys);
    if (!header.keysFollow && !fresh) throw new SyncProtocolError('the peer sent no keys for a request of all of them');
    const digests = decodeDigests(answer, header);
    for (const digest of digests) await this.#providers.addProvider(digestToCid(digest), peer);
    this.#keysReceived += digests.length;
    const copy: PeerCopy = {
      inTable: header.inTable,
      tableSize: header.tableSize,
      fingerprint: header.fingerprint,
      fullAt: fresh && !header.keysFollow ? previous.fullAt : now,
      checkedAt: now,
    };
    this.#copies.set(id, copy);
    return copy;
  }

  async #answer(stream: Stream, connection: Connection): Promise<void> {
    const signal = AbortSignal.any([this.#closing.signal, AbortSignal.timeout(EXCHANGE_TIMEOUT_MS)]);
    try {
      const message = decodeMessage(await readAll(stream, MESSAGE_HEAD_BYTES, (head) => messageBytes(head, this.#maxKeys), signal), this.#maxKeys);
      if (message.kind === 'push') {
        // Only a peer itself says what it provides, as with kad-dht's ADD_PROVIDER.
        for (const digest of message.digests) await this.#providers.addProvider(digestToCid(digest), connection.remotePeer);
        this.#keysReceived += message.digests.length;
        stream.send(PUSH_ACK);
      } else {
        const inTable = (await this.#table.find(connection.remotePeer)) !== undefined;
        for (const part of encodeAnswer(this.#init.keys, message.fingerprint, inTable, this.#table.size)) {
          if (!stream.send(part)) await drained(stream, signal);
        }
      }
      await stream.close({ signal });
    } catch (err) {
      stream.abort(err as Error);
      if (!this.#closing.signal.aborted) this.#init.logger.debug('could not answer a peer\'s request for records', { peer: connection.remotePeer.toString(), err: err as Error });
    }
  }
}

/**
 * A stream's bytes until the remote closes its side. Once `headBytes` came,
 * `limitFor(head)` says how many bytes the whole may have; more is a protocol
 * error, found as soon as they come.
 */
async function readAll(stream: Stream, headBytes: number, limitFor: (head: Uint8Array) => number, signal: AbortSignal): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let length = 0;
  let limit: number | undefined;
  const onAbort = () => stream.abort(signal.reason as Error);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of stream) {
      const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray();
      parts.push(bytes);
      length += bytes.length;
      if (limit === undefined && length >= headBytes) limit = limitFor(concat(parts, length).subarray(0, headBytes));
      if (limit !== undefined && length > limit) throw new SyncProtocolError(`more than the ${limit} bytes expected`);
    }
    signal.throwIfAborted();
    return concat(parts, length);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function drained(stream: Stream, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      stream.removeEventListener('drain', done);
      stream.removeEventListener('close', done);
      signal.removeEventListener('abort', done);
      if (signal.aborted) reject(signal.reason as Error);
      else if (stream.status !== 'open') reject(new Error('stream closed while sending'));
      else resolve();
    };
    stream.addEventListener('drain', done);
    stream.addEventListener('close', done);
    signal.addEventListener('abort', done);
  });
}
