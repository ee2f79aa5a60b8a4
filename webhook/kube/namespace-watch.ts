/**
 * Every namespace's annotations, kept current by list + watch, so a review
 * reads them from memory. One loop: list (remember the list's resourceVersion),
 * watch from there with bookmarks, and when the watch ends, watch again from the
 * last resourceVersion seen; list again when the server says it is too old (410,
 * as an ERROR event or an HTTP status). Failures back off, doubling to a limit.
 *
 * Built on client-node's `Watch`, not its `ListWatch` (informer): in 2.0 a
 * ListWatch stops for good on any error but 410 and a timeout, and after its
 * reconnect delay or its list it re-opens the watch without checking whether it
 * was stopped meanwhile.
 */
import type { CoreV1Api, Watch } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../shared/log.ts';
import { describeApiError, withSignal } from './api.ts';

export interface NamespaceWatchInit {
  core: CoreV1Api;
  watch: Watch;
  logger: Logger;
  /** Wait after the first failure in a row; doubles with each. Default 500 ms. */
  retryDelayMs?: number;
  /** Longest wait between attempts. Default 30 s. */
  maxRetryDelayMs?: number;
  /** Limit of one list call. Default 30 s. */
  listTimeoutMs?: number;
}

const PATH = '/api/v1/namespaces';

/** A watch that ends sooner than this without an event counts as a failure (no tight reconnect loop). */
const SHORT_WATCH_MS = 1000;

/** A namespace as a watch event carries it: plain JSON. */
interface WatchedObject {
  code?: number;
  reason?: string;
  message?: string;
  metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> };
}

interface WatchEnd {
  error: unknown;
  /** The server answered 410: our resourceVersion is too old, list again. */
  expired: boolean;
  /** Changes and bookmarks delivered. */
  events: number;
  ms: number;
}

export class NamespaceWatch {
  readonly #core: CoreV1Api;
  readonly #watch: Watch;
  readonly #log: Logger;
  readonly #retryDelayMs: number;
  readonly #maxRetryDelayMs: number;
  readonly #listTimeoutMs: number;
  readonly #stop = new AbortController();
  #annotations = new Map<string, Readonly<Record<string, string>>>();
  #resourceVersion = '';
  #ready = false;
  #current: AbortController | undefined;
  #loop: Promise<void> | undefined;

  constructor(init: NamespaceWatchInit) {
    this.#core = init.core;
    this.#watch = init.watch;
    this.#log = init.logger;
    this.#retryDelayMs = init.retryDelayMs ?? 500;
    this.#maxRetryDelayMs = init.maxRetryDelayMs ?? 30_000;
    this.#listTimeoutMs = init.listTimeoutMs ?? 30_000;
  }

  /** True once the first list has completed; stays true (a later outage serves the last known state). */
  get ready(): boolean {
    return this.#ready;
  }

  /** A namespace's annotations ({} when it has none); undefined before the first list or for an unknown namespace. */
  annotations(namespace: string): Readonly<Record<string, string>> | undefined {
    return this.#annotations.get(namespace);
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  async close(): Promise<void> {
    this.#current?.abort();
    this.#stop.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#stop.signal.aborted) {
      try {
        if (this.#resourceVersion === '') await this.#list();
        const end = await this.#watchOnce();
        if (this.#stop.signal.aborted) return;
        // A watch ends normally at the server's timeout, or at client-node's 30 s without a byte.
        const normal = end.expired || end.error === null || end.error === undefined || (end.error as Error).name === 'TimeoutError';
        if (end.expired) {
          this.#log.info('namespace watch expired: listing again', { resourceVersion: this.#resourceVersion });
          this.#resourceVersion = '';
        } else if (!normal) {
          this.#log.warn('namespace watch failed', { ...describeApiError(end.error) });
        }
        // Only a watch that delivered, or lasted, ends a run of failures: a server that
        // answers every watch (or every list) at once with an end or a 410 is backed off from.
        failures = normal && (end.events > 0 || end.ms >= SHORT_WATCH_MS) ? 0 : failures + 1;
      } catch (err) {
        if (this.#stop.signal.aborted) return;
        this.#log.warn('namespace list failed', { ...describeApiError(err) });
        failures += 1;
      }
      if (failures > 0) await this.#backOff(failures);
    }
  }

  async #list(): Promise<void> {
    const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(this.#listTimeoutMs)]);
    const list = await this.#core.listNamespace({}, withSignal(signal));
    const annotations = new Map<string, Readonly<Record<string, string>>>();
    for (const ns of list.items) {
      if (ns.metadata?.name) annotations.set(ns.metadata.name, Object.freeze({ ...ns.metadata.annotations }));
    }
    this.#annotations = annotations;
    this.#resourceVersion = list.metadata?.resourceVersion ?? '';
    if (!this.#ready) this.#log.info('namespace annotations ready', { namespaces: annotations.size });
    this.#ready = true;
  }

  #watchOnce(): Promise<WatchEnd> {
    return new Promise((resolve) => {
      const started = performance.now();
      let events = 0;
      let expired = false;
      let ended = false;
      const onEvent = (type: string, object: WatchedObject) => {
        const name = object.metadata?.name;
        if (type === 'ERROR') {
          if (object.code === 410) expired = true;
          else this.#log.warn('namespace watch error event', { status: object.code, reason: object.reason, message: object.message });
          return;
        }
        if (type === 'ADDED' || type === 'MODIFIED') {
          if (name) this.#annotations.set(name, Object.freeze({ ...object.metadata?.annotations }));
        } else if (type === 'DELETED') {
          if (name) this.#annotations.delete(name);
        } else if (type !== 'BOOKMARK') {
          return;
        }
        events += 1;
        this.#resourceVersion = object.metadata?.resourceVersion || this.#resourceVersion;
      };
      const onEnd = (error: unknown) => {
        if (ended) return;
        ended = true;
        this.#stop.signal.removeEventListener('abort', onStop);
        this.#current = undefined;
        const status = (error as { statusCode?: number } | null)?.statusCode;
        resolve({ error, expired: expired || status === 410, events, ms: performance.now() - started });
      };
      // close() while the watch connects: end now; the connection is aborted once it is made.
      const onStop = () => onEnd(null);
      this.#stop.signal.addEventListener('abort', onStop, { once: true });
      const query = { resourceVersion: this.#resourceVersion, allowWatchBookmarks: true };
      this.#watch.watch(PATH, query, onEvent, onEnd).then((controller) => {
        if (ended || this.#stop.signal.aborted) controller.abort();
        else this.#current = controller;
      }, onEnd);
    });
  }

  async #backOff(failures: number): Promise<void> {
    const delay = Math.min(this.#maxRetryDelayMs, this.#retryDelayMs * 2 ** (failures - 1));
    // ±20 %: replicas that lost the API together do not come back in step.
    const jittered = delay * (0.8 + Math.random() * 0.4);
    await sleep(jittered, undefined, { signal: this.#stop.signal }).catch(() => undefined);
  }
}
