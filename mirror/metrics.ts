/** The mirror's own metrics. */
import { Counter, Histogram, type Registry } from 'prom-client';

export type Source = 'local' | 'peer' | 'upstream' | 'miss';
export type Kind = 'manifest' | 'blob';

export interface MirrorMetrics {
  readonly requests: Counter<'source' | 'kind'>;
  readonly bytes: Counter<'source'>;
  readonly httpDuration: Histogram<'route' | 'method' | 'code'>;
  /** Content whose bytes did not match its digest: never served as good. */
  readonly corrupt: Counter<'source'>;
  /** DHT lookup time until the first usable provider (hit), or until giving up (miss). */
  readonly resolveDuration: Histogram<'outcome'>;
  /** Peers that could not serve what they advertised, by why. */
  readonly peerFailures: Counter<'reason'>;
}

/** Why a peer was passed over: see PeerSource. */
export type PeerFailureReason = 'unreachable' | 'status' | 'invalid' | 'idle' | 'truncated' | 'corrupt';

export function createMirrorMetrics(registry: Registry): MirrorMetrics {
  return {
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
    corrupt: new Counter({
      name: 'shoal_mirror_corrupt_content_total',
      help: 'Content whose bytes did not hash to its digest; the response was refused or aborted.',
      labelNames: ['source'],
      registers: [registry],
    }),
    resolveDuration: new Histogram({
      name: 'shoal_resolve_duration_seconds',
      help: 'DHT lookup time until the first usable provider (outcome hit), or until the resolve timeout or the end of the lookup (miss).',
      labelNames: ['outcome'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [registry],
    }),
    peerFailures: new Counter({
      name: 'shoal_peer_fetch_failures_total',
      help: 'Peers passed over while fetching: unreachable, status (not 200/206), invalid (headers or size disagree), idle (stalled), truncated (failed mid-body), corrupt (wrong bytes: quarantined).',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
}
