/** Metrics of fetching from peers, shared by the mirror and the webhook. */
import { Counter, Histogram, type Registry } from 'prom-client';

/** Why a peer was passed over: see PeerSource. */
export type PeerFailureReason = 'unreachable' | 'status' | 'invalid' | 'idle' | 'truncated' | 'corrupt';

export interface PeerMetrics {
  /** DHT lookup time until the first usable provider (hit), or until giving up (miss). */
  readonly resolveDuration: Histogram<'outcome'>;
  /** Peers that could not serve what they advertised, by why. */
  readonly peerFailures: Counter<'reason'>;
  /** Content whose bytes did not match its digest, by source (`peer` here). */
  readonly corrupt: Counter<'source'>;
}

/** The lookup and failure metrics, registered in `registry`; `corrupt` is the caller's own counter. */
export function createPeerMetrics(registry: Registry, corrupt: Counter<'source'>): PeerMetrics {
  return {
    corrupt,
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
