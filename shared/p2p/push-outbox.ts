/**
 * What each routing-table peer is still owed of this node's pushes
 * (record-sync.ts): keys it began to advertise, and whether the table changed
 * since the peer last heard. Each peer has its own queue, so a slow peer holds
 * back only itself; a push that fails is sent again, with backoff, for as long
 * as the peer stays in the table.
 */
import type { PeerId } from '@libp2p/interface';
import type { Logger } from '../log.ts';
import { MAX_PUSH_KEYS } from './record-sync-wire.ts';

export interface PushOutboxInit {
  /** Sends keys (and the table) to a peer; resolves with how many keys went (withdrawn ones do not). */
  send(peer: PeerId, keys: readonly string[], signal: AbortSignal): Promise<number>;
  /** Whether the peer is still in the routing table: a peer that left is owed nothing. */
  inTable(peer: PeerId): boolean;
  /** Longest wait between tries of a failing peer. */
  maxRetryMs: number;
  logger: Logger;
}

export interface PushOutboxStats {
  readonly pushesSucceeded: number;
  readonly pushesFailed: number;
  /** Keys pushed, once per peer that stored them. */
  readonly keysPushed: number;
}

interface PeerBox {
  readonly peer: PeerId;
  /** In the order they came; a key owed twice (a re-provide) goes once. */
  keys: Set<string>;
  /** The table changed since the peer last heard from this node. */
  notify: boolean;
  running: boolean;
  /** Waiting to try again after a failure. */
  retry: NodeJS.Timeout | undefined;
  backoffMs: number;
}

const FIRST_RETRY_MS = 500;

export class PushOutbox {
  readonly #init: PushOutboxInit;
  readonly #boxes = new Map<string, PeerBox>();
  readonly #closing = new AbortController();
  #succeeded = 0;
  #failed = 0;
  #keysPushed = 0;

  constructor(init: PushOutboxInit) {
    this.#init = init;
  }

  /** Owes `key` to each of `peers` (undefined: only the news that the table changed). */
  add(peers: readonly PeerId[], key: string | undefined): void {
    if (this.#closing.signal.aborted) return;
    for (const peer of peers) {
      const id = peer.toString();
      let box = this.#boxes.get(id);
      if (box === undefined) {
        box = { peer, keys: new Set(), notify: false, running: false, retry: undefined, backoffMs: 0 };
        this.#boxes.set(id, box);
      }
      if (key === undefined) box.notify = true;
      else box.keys.add(key);
      this.#kick(box);
    }
  }

  /** A peer left the table: it is owed nothing (if it comes back, it pulls everything). */
  drop(peerId: string): void {
    const box = this.#boxes.get(peerId);
    if (box === undefined) return;
    clearTimeout(box.retry);
    box.keys = new Set();
    box.notify = false;
    this.#boxes.delete(peerId);
  }

  /** Resolves once every peer got what it is owed, or is waiting to be tried again after a failure. */
  async idle(): Promise<void> {
    const busy = (box: PeerBox) => box.running || (box.retry === undefined && (box.keys.size > 0 || box.notify));
    while ([...this.#boxes.values()].some(busy)) await new Promise((resolve) => setTimeout(resolve, 10));
  }

  stats(): PushOutboxStats {
    return { pushesSucceeded: this.#succeeded, pushesFailed: this.#failed, keysPushed: this.#keysPushed };
  }

  close(): void {
    this.#closing.abort();
    for (const id of [...this.#boxes.keys()]) this.drop(id);
  }

  #kick(box: PeerBox): void {
    if (box.running || box.retry !== undefined) return;
    box.running = true;
    void this.#run(box)
      .catch((err: unknown) => this.#init.logger.warn('push loop failed', { peer: box.peer.toString(), err: err as Error }))
      .finally(() => {
        box.running = false;
        // Owed something added after the loop's last look and before this step.
        if ((box.keys.size > 0 || box.notify) && this.#boxes.get(box.peer.toString()) === box && !this.#closing.signal.aborted) this.#kick(box);
      });
  }

  async #run(box: PeerBox): Promise<void> {
    // A burst of provides in one turn of the event loop goes in one push.
    await new Promise((resolve) => setImmediate(resolve));
    while ((box.keys.size > 0 || box.notify) && this.#boxes.get(box.peer.toString()) === box) {
      const batch: string[] = [];
      for (const key of box.keys) {
        if (batch.length === MAX_PUSH_KEYS) break;
        batch.push(key);
      }
      box.notify = false;
      try {
        // Not `+= await`: that reads the counter before the await, and pushes to other peers run meanwhile.
        const sent = await this.#init.send(box.peer, batch, this.#closing.signal);
        this.#keysPushed += sent;
        this.#succeeded++;
        for (const key of batch) box.keys.delete(key);
        box.backoffMs = 0;
      } catch (err) {
        // Closing, or the peer left (and maybe came back, with a box of its own) meanwhile.
        if (this.#closing.signal.aborted || this.#boxes.get(box.peer.toString()) !== box) return;
        this.#failed++;
        // The table may have changed meanwhile: the next try sends it again.
        box.notify = true;
        if (!this.#init.inTable(box.peer)) {
          this.drop(box.peer.toString());
          return;
        }
        box.backoffMs = Math.min(Math.max(FIRST_RETRY_MS, box.backoffMs * 2), this.#init.maxRetryMs);
        this.#init.logger.debug('could not push to a peer; trying again', { peer: box.peer.toString(), keys: batch.length, retryMs: box.backoffMs, err: err as Error });
        box.retry = setTimeout(() => {
          box.retry = undefined;
          this.#kick(box);
        }, box.backoffMs);
        box.retry.unref();
        return;
      }
    }
  }
}
