/**
 * Keeps the router's advertisements equal to what the node's containerd holds
 * for the mirrored registries. Every sync computes the whole key set (cheap
 * after the first: manifests are remembered by digest) and advertises what is
 * new and withdraws what is gone. Syncs run at start, shortly after
 * containerd's image and content events, after the event stream reconnects,
 * and periodically: containerd 1.6 and 1.7 send no event when content arrives,
 * nor when garbage collection removes it.
 */
import type { Logger } from '../../shared/log.ts';
import type { Router } from '../../shared/p2p/router.ts';
import type { MirroredRegistry } from '../../shared/registries.ts';
import type { ContainerdClient, ContainerdEvent } from '../store/containerd/client.ts';
import type { ContentStore } from '../store/store.ts';
import { eventFilters, followEvents } from './event-stream.ts';
import { collectKeys } from './keys.ts';
import { ManifestReader } from './manifests.ts';

/** What the advertiser asks of containerd (the ContainerdClient; a test may wrap it). */
export type AdvertiserContainerd = Pick<ContainerdClient, 'namespace' | 'listImages' | 'listContent' | 'subscribe'>;

export interface AdvertiserInit {
  /** Image records, content presence and events, in the namespace the mirror serves. */
  containerd: AdvertiserContainerd;
  /** Reads manifests checked against their digests: the registry handler's store, so what is advertised is what it serves. */
  store: ContentStore;
  router: Router;
  /** Registries whose images are advertised; empty: every registry. */
  mirroredRegistries: readonly MirroredRegistry[];
  logger: Logger;
  /** Period of the full resync, counted from the end of the last sync. Default 60000 (1 min). */
  resyncIntervalMs?: number;
  /** Wait after an event before syncing, so a pull's burst of events costs one sync. Default 200. */
  debounceMs?: number;
  /** Manifests whose children are remembered. Default 10000. */
  manifestCacheEntries?: number;
  /** First wait before re-subscribing to events, and before retrying a failed sync; doubles per failure. Default 250. */
  minBackoffMs?: number;
  /** Longest such wait. Default 30000. */
  maxBackoffMs?: number;
}

export const advertiserDefaults = {
  resyncIntervalMs: 60_000,
  debounceMs: 200,
  manifestCacheEntries: 10_000,
  minBackoffMs: 250,
  maxBackoffMs: 30_000,
} as const;

export interface AdvertiserStatus {
  /** Keys advertised by this advertiser now. */
  readonly keys: number;
  /** Tag keys among them. */
  readonly tags: number;
  /** Syncs that completed since start. */
  readonly syncs: number;
  /** Events received from containerd since start. */
  readonly events: number;
  /** When the last successful sync ended. */
  readonly lastSync: Date | undefined;
  /** Why the last sync failed; undefined once one succeeds. */
  readonly lastError: string | undefined;
}

export class Advertiser {
  readonly #containerd: AdvertiserContainerd;
  readonly #router: Router;
  readonly #mirrored: ReadonlySet<string>;
  readonly #logger: Logger;
  readonly #manifests: ManifestReader;
  readonly #opts: Required<Pick<AdvertiserInit, keyof typeof advertiserDefaults>>;
  readonly #abort = new AbortController();

  #advertised: ReadonlySet<string> = new Set();
  #tags = 0;
  #started = false;
  #events: Promise<void> | undefined;
  /** The sync running now, including any rerun requested meanwhile. */
  #running: Promise<void> | undefined;
  #rerun = false;
  #debounceTimer: NodeJS.Timeout | undefined;
  #resyncTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  #syncs = 0;
  #eventCount = 0;
  #lastSync: Date | undefined;
  #lastError: string | undefined;
  /** Unservable manifests already warned about, so a resync does not repeat the warning. */
  #reportedUnservable = new Set<string>();

  constructor(init: AdvertiserInit) {
    this.#containerd = init.containerd;
    this.#router = init.router;
    this.#mirrored = new Set(init.mirroredRegistries.map((r) => r.host));
    this.#logger = init.logger;
    this.#opts = {
      resyncIntervalMs: init.resyncIntervalMs ?? advertiserDefaults.resyncIntervalMs,
      debounceMs: init.debounceMs ?? advertiserDefaults.debounceMs,
      manifestCacheEntries: init.manifestCacheEntries ?? advertiserDefaults.manifestCacheEntries,
      minBackoffMs: init.minBackoffMs ?? advertiserDefaults.minBackoffMs,
      maxBackoffMs: init.maxBackoffMs ?? advertiserDefaults.maxBackoffMs,
    };
    this.#manifests = new ManifestReader({ store: init.store, maxEntries: this.#opts.manifestCacheEntries });
  }

  /**
   * Subscribes to events and runs the first sync; resolves when that sync is
   * done. If it failed (containerd not up yet) it is logged and retried with
   * backoff: the mirror serves meanwhile, it is just not found by peers.
   */
  async start(): Promise<void> {
    if (this.#started) throw new Error('advertiser already started');
    this.#started = true;
    const filters = eventFilters(this.#containerd.namespace);
    this.#events = followEvents({
      subscribe: (f, signal) => this.#containerd.subscribe(f, signal),
      filters,
      signal: this.#abort.signal,
      onEvent: (event) => this.#onEvent(event),
      onResubscribe: () => this.#scheduleSync(),
      minBackoffMs: this.#opts.minBackoffMs,
      maxBackoffMs: this.#opts.maxBackoffMs,
      logger: this.#logger,
    });
    this.#logger.info('advertiser starting', {
      namespace: this.#containerd.namespace,
      mirroredRegistries: this.#mirrored.size === 0 ? 'all' : [...this.#mirrored],
      eventFilters: filters,
      resyncIntervalMs: this.#opts.resyncIntervalMs,
    });
    await this.sync().catch(() => undefined);
  }

  /**
   * Syncs now (or after the sync running now); resolves once a sync that began
   * after this call is done, rejects if it failed (and a retry is scheduled).
   */
  sync(): Promise<void> {
    if (this.#abort.signal.aborted) return Promise.resolve();
    clearTimeout(this.#debounceTimer);
    this.#debounceTimer = undefined;
    if (this.#running !== undefined) {
      this.#rerun = true;
      return this.#running;
    }
    this.#running = this.#syncLoop();
    return this.#running;
  }

  /** Keys this advertiser has advertised and not withdrawn. */
  advertised(): ReadonlySet<string> {
    return this.#advertised;
  }

  status(): AdvertiserStatus {
    return {
      keys: this.#advertised.size,
      tags: this.#tags,
      syncs: this.#syncs,
      events: this.#eventCount,
      lastSync: this.#lastSync,
      lastError: this.#lastError,
    };
  }

  /**
   * Stops following events and syncing. Keys stay advertised: closing the
   * router (which withdraws everything) is its owner's call.
   */
  async stop(): Promise<void> {
    this.#abort.abort();
    clearTimeout(this.#debounceTimer);
    clearTimeout(this.#resyncTimer);
    await this.#events;
    await this.#running?.catch(() => undefined);
  }

  #onEvent(event: ContainerdEvent): void {
    this.#eventCount++;
    const d = event.decoded;
    this.#logger.debug('containerd event', {
      topic: event.topic,
      type: event.typeUrl,
      ...(d === undefined ? {} : 'name' in d ? { name: d.name } : { digest: d.digest }),
    });
    this.#scheduleSync();
  }

  /** A sync soon; events within the debounce share it. */
  #scheduleSync(): void {
    if (this.#abort.signal.aborted || this.#debounceTimer !== undefined) return;
    this.#debounceTimer = setTimeout(() => {
      this.#debounceTimer = undefined;
      this.sync().catch(() => undefined);
    }, this.#opts.debounceMs);
  }

  /** The next periodic sync, or a retry with backoff after a failure. */
  #armResync(): void {
    clearTimeout(this.#resyncTimer);
    if (this.#abort.signal.aborted) return;
    const retryMs = Math.min(this.#opts.minBackoffMs * 2 ** Math.min(this.#failures - 1, 30), this.#opts.maxBackoffMs);
    const delay = this.#failures > 0 ? Math.min(retryMs, this.#opts.resyncIntervalMs) : this.#opts.resyncIntervalMs;
    this.#resyncTimer = setTimeout(() => {
      this.sync().catch(() => undefined);
    }, delay);
  }

  async #syncLoop(): Promise<void> {
    let error: unknown;
    try {
      do {
        this.#rerun = false;
        error = undefined;
        try {
          await this.#syncOnce();
          this.#failures = 0;
          this.#lastError = undefined;
        } catch (err) {
          error = err;
          this.#failures++;
          this.#lastError = (err as Error).message;
          // The first failure is news; repeats while containerd stays away are not.
          const fields = { error: err as Error, failures: this.#failures };
          if (this.#failures === 1) this.#logger.warn('advertiser sync failed; keeping what is advertised and retrying', fields);
          else this.#logger.debug('advertiser sync failed again', fields);
        }
      } while (this.#rerun && !this.#abort.signal.aborted);
    } finally {
      // In the same step as the last rerun check: a sync() from now on starts a new loop.
      this.#running = undefined;
      this.#armResync();
    }
    if (error !== undefined) throw error as Error;
  }

  async #syncOnce(): Promise<void> {
    const began = performance.now();
    const readsBefore = this.#manifests.reads;
    const [images, present] = await Promise.all([this.#containerd.listImages(), this.#presentDigests()]);
    const result = await collectKeys(images, {
      mirrored: this.#mirrored,
      isPresent: (digest) => present.has(digest.text),
      children: (descriptor) => this.#manifests.children(descriptor),
    });
    if (this.#abort.signal.aborted) return;

    const added = [...result.keys].filter((key) => !this.#advertised.has(key));
    const withdrawn = [...this.#advertised].filter((key) => !result.keys.has(key));
    if (added.length > 0) this.#router.advertise(added);
    if (withdrawn.length > 0) this.#router.withdraw(withdrawn);
    this.#advertised = result.keys;
    this.#tags = result.tags;
    this.#syncs++;
    this.#lastSync = new Date();

    const unservable = new Set(result.unservable.map((d) => d.text));
    for (const digest of unservable) {
      if (!this.#reportedUnservable.has(digest)) {
        this.#logger.warn('manifest in containerd cannot be served (corrupt or not a manifest); not advertising it or what it lists', { digest });
      }
    }
    this.#reportedUnservable = unservable;

    const fields = {
      added: added.length,
      withdrawn: withdrawn.length,
      keys: result.keys.size,
      tags: result.tags,
      images: result.images,
      manifestsRead: this.#manifests.reads - readsBefore,
      ms: Math.round(performance.now() - began),
    };
    if (added.length > 0 || withdrawn.length > 0 || this.#syncs === 1) this.#logger.info('advertised keys synced', fields);
    else this.#logger.debug('advertised keys synced', fields);
    if (added.length + withdrawn.length > 0) this.#logger.debug('advertised keys changed', { added, withdrawn });
  }

  /** Every digest containerd's content store holds in the namespace: one List instead of an Info per blob. */
  async #presentDigests(): Promise<Set<string>> {
    const present = new Set<string>();
    for await (const info of this.#containerd.listContent()) present.add(info.digest);
    return present;
  }
}
