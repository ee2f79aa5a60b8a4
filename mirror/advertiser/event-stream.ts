/**
 * Following containerd's event stream across containerd restarts: subscribe,
 * pass events on, and when the stream breaks subscribe again with backoff.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../shared/log.ts';
import type { ContainerdEvent } from '../store/containerd/client.ts';

/**
 * The events that can change what a node advertises, in one namespace. The
 * stream carries every namespace's events, so each filter names it; within a
 * filter `,` means and, across filters or. `/content/` topics: ContentDelete
 * (sent by 1.6 for Content.Delete, not for garbage collection) and, from 2.1,
 * ContentCreate.
 */
export function eventFilters(namespace: string): string[] {
  const ns = `namespace==${JSON.stringify(namespace)}`;
  return [`${ns},topic~="^/images/"`, `${ns},topic~="^/content/"`];
}

export interface EventStreamInit {
  subscribe(filters: string[], signal: AbortSignal): AsyncIterable<ContainerdEvent>;
  filters: string[];
  /** Ends the stream and the retries. */
  signal: AbortSignal;
  onEvent(event: ContainerdEvent): void;
  /**
   * Called as a new subscription goes out after a broken one: events in the
   * gap are lost, so the caller resyncs. (containerd sends no response headers
   * before the first event, so "subscribed" cannot be observed.)
   */
  onResubscribe(): void;
  /** First wait before subscribing again; doubles per failure. */
  minBackoffMs: number;
  maxBackoffMs: number;
  logger: Logger;
}

/** Runs until the signal aborts; never throws. */
export async function followEvents(init: EventStreamInit): Promise<void> {
  const { signal, logger } = init;
  let backoffMs = init.minBackoffMs;
  let failures = 0;
  while (!signal.aborted) {
    if (failures > 0) init.onResubscribe();
    const began = Date.now();
    let received = false;
    try {
      for await (const event of init.subscribe(init.filters, signal)) {
        if (!received && failures > 0) logger.info('containerd event stream back', { after: failures });
        received = true;
        init.onEvent(event);
      }
      if (signal.aborted) return;
      throw new Error('stream ended by containerd');
    } catch (err) {
      if (signal.aborted) return;
      // A stream that delivered or lasted was healthy: start the backoff over.
      if (received || Date.now() - began > init.maxBackoffMs) {
        backoffMs = init.minBackoffMs;
        failures = 0;
      }
      failures++;
      const fields = { error: err as Error, failures, retryInMs: backoffMs };
      if (failures === 1) logger.warn('containerd event stream broke; subscribing again', fields);
      else logger.debug('containerd event stream still down', fields);
    }
    await sleep(backoffMs, undefined, { signal }).catch(() => undefined);
    backoffMs = Math.min(backoffMs * 2, init.maxBackoffMs);
  }
}
