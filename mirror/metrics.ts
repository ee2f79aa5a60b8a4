/** The mirror's own metrics. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { createPeerMetrics, type PeerMetrics } from '../shared/peers/metrics.ts';

export type Source = 'local' | 'peer' | 'upstream' | 'miss';
export type Kind = 'manifest' | 'blob';

export interface MirrorMetrics extends PeerMetrics {
  readonly requests: Counter<'source' | 'kind'>;
  readonly bytes: Counter<'source'>;
  readonly httpDuration: Histogram<'route' | 'method' | 'code'>;
  /** Body bytes received from upstream registries (blobs and manifests). */
  readonly upstreamBytes: Counter<'registry'>;
  /** Upstream calls by outcome: the HTTP status, or the failure when there was none (timeout, circuit-open). */
  readonly upstreamRequests: Counter<'registry' | 'code'>;
  /** Blob bytes sent to other nodes from downloads still in progress in the spool. */
  readonly spoolPartialPeerBytes: Counter;
  /** Reads of containerd's content files by how their digest check was had: hashed, joined to one running, or remembered. */
  readonly contentChecks: Counter<'use'>;
}

export function createMirrorMetrics(registry: Registry): MirrorMetrics {
  const corrupt = new Counter({
    name: 'shoal_mirror_corrupt_content_total',
    help: 'Content whose bytes did not hash to its digest; the response was refused or aborted.',
    labelNames: ['source'],
    registers: [registry],
  });
  return {
    ...createPeerMetrics(registry, corrupt),
    requests: new Counter({
      name: 'shoal_mirror_requests_total',
      help: 'Manifest and blob requests by where the content came from (miss: not found).',
      labelNames: ['source', 'kind'],
      registers: [registry],
    }),
    bytes: new Counter({
      name: 'shoal_mirror_bytes_total',
      help: 'Content bytes sent to clients, by where they came from.',
      labelNames: ['source'],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'shoal_mirror_http_request_duration_seconds',
      help: 'Registry API request duration until the last byte was sent.',
      labelNames: ['route', 'method', 'code'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    upstreamBytes: new Counter({
      name: 'shoal_upstream_bytes_total',
      help: 'Body bytes received from upstream registries (blobs and manifests).',
      labelNames: ['registry'],
      registers: [registry],
    }),
    upstreamRequests: new Counter({
      name: 'shoal_upstream_requests_total',
      help: 'Upstream calls by registry and outcome: the HTTP status, or the failure (unavailable, circuit-open, ...) when no status applies.',
      labelNames: ['registry', 'code'],
      registers: [registry],
    }),
    spoolPartialPeerBytes: new Counter({
      name: 'shoal_spool_partial_peer_bytes_total',
      help: 'Blob bytes sent to other nodes from upstream downloads still in progress here.',
      registers: [registry],
    }),
    contentChecks: new Counter({
      name: 'shoal_mirror_content_checks_total',
      help: 'Reads of content files by how their digest check was had: hashed (a new pass over the file), joined (a pass already running), remembered (a pass of the same file lately).',
      labelNames: ['use'],
      registers: [registry],
    }),
  };
}

/** The spool's size, read at each scrape: bytes held by downloads in progress (at their full size) and complete files not yet removed. */
export function registerSpoolBytes(registry: Registry, usedBytes: () => number): void {
  new Gauge({
    name: 'shoal_spool_bytes',
    help: 'Bytes the upstream spool holds now: downloads in progress (at their full size) and complete files not yet removed.',
    registers: [registry],
    collect() {
      this.set(usedBytes());
    },
  });
}
