/**
 * DHT lookups as containerd meets them: HEAD of a blob by digest on a node's
 * mirror, for a digest only another node holds (hit: the DHT lookup, then a
 * HEAD to that peer's mirror) and for one nobody has (miss: a 404 once the
 * lookup ends or the resolve timeout passes). Each request asks for a digest
 * of its own, so nothing is answered from a previous request. Beside the HTTP
 * times, the mirror's own `shoal_resolve_duration_seconds` histogram is read
 * before and after: its difference is the lookup time alone, measured inside
 * the process under the very same load.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { measureHeads, type HeadSeries, type HeadTarget } from './head.ts';
import { parseHistogram, subtract, type Buckets } from './histogram.ts';
import { metricValue } from '../harness/http.ts';

export interface LookupNode {
  /** Label in tables and JSON. */
  name: string;
  /** `http://IP:PORT` of its mirror's registry API. */
  mirrorUrl: string;
  metricsUrl: string;
}

export interface LookupInit {
  /** Asks for the hits (not the holder). */
  askers: LookupNode[];
  /** The node holding the digests: its HEAD of its own content (no lookup) is the floor. */
  holder: LookupNode;
  /** Repository in the request paths. */
  repo: string;
  /** Digests only the holder has, with their sizes; each request takes the next. */
  digests: readonly string[];
  sizes: ReadonlyMap<string, number>;
  /** Timed requests per series. */
  count: number;
  /** Untimed requests per series first (connections, JIT); not in the histograms either. */
  warmup: number;
  batch: number;
  signal: AbortSignal;
}

export interface LookupSeries extends HeadSeries {
  node: string;
  kind: 'hit' | 'miss' | 'local';
  /**
   * Hits only: the samples (by index) answered 404 because no provider came
   * within the resolve timeout. Not a wrong response (containerd then goes to
   * its next host), but no hit either.
   */
  notFound: number[];
}

export interface ResolveHistograms {
  node: string;
  /** The lookups made during the timed series, by outcome. */
  hit: Buckets;
  miss: Buckets;
  /** Lookups during the timed series answered from the node's own records, and by asking the network (shoal_dht_lookups_total). */
  fromRecords: number;
  fromNetwork: number;
}

export interface LookupResult {
  series: LookupSeries[];
  histograms: ResolveHistograms[];
}

const HISTOGRAM = 'shoal_resolve_duration_seconds';
const LOOKUPS = 'shoal_dht_lookups_total';

export function seriesName(node: string, kind: LookupSeries['kind']): string {
  return kind === 'local' ? `${node}: own blob (no lookup)` : `${node}: ${kind}`;
}

export async function measureLookups(init: LookupInit): Promise<LookupResult> {
  const perSeries = init.warmup + init.count;
  const hitSeries = init.askers.length;
  if (init.digests.length < perSeries * (hitSeries + 1)) {
    throw new Error(`${init.digests.length} digests are too few for ${hitSeries + 1} series of ${perSeries} requests`);
  }
  // A digest range per series: each request asks for a digest nobody asked for before.
  const range = (series: number) => (n: number) => init.digests[series * perSeries + n]!;
  const blobPath = (digest: string) => `/v2/${init.repo}/blobs/${digest}`;
  // Records each answer's status in order, so a 404 can be told from a hit afterwards.
  const statuses = new Map<HeadTarget, number[]>();
  const found = (res: IncomingMessage, path: string): string | undefined => {
    if (res.statusCode === 404) return undefined;
    if (res.statusCode !== 200) return `HTTP ${res.statusCode}, want 200 (or 404: not found in time)`;
    const digest = path.slice(path.lastIndexOf('/') + 1);
    const want = String(init.sizes.get(digest));
    if (res.headers['content-length'] !== want) return `Content-Length ${String(res.headers['content-length'])}, want ${want}`;
    if (res.headers['docker-content-digest'] !== digest) return `Docker-Content-Digest ${String(res.headers['docker-content-digest'])}, want ${digest}`;
    return undefined;
  };
  const missing = (res: IncomingMessage): string | undefined => (res.statusCode === 404 ? undefined : `HTTP ${res.statusCode}, want 404`);
  const absentDigest = (salt: string) => (n: number) => `sha256:${createHash('sha256').update(`shoal-bench absent ${salt} ${n}`).digest('hex')}`;

  const mustFind = (res: IncomingMessage, path: string): string | undefined => (res.statusCode === 200 ? found(res, path) : `HTTP ${res.statusCode}, want 200`);

  type Planned = { target: HeadTarget; node: string; kind: LookupSeries['kind'] };
  const planned: Planned[] = [
    { node: init.holder.name, kind: 'local', target: { name: '', base: init.holder.mirrorUrl, path: (n) => blobPath(range(0)(n)), check: mustFind } },
    ...init.askers.flatMap((asker, i): Planned[] => [
      { node: asker.name, kind: 'hit', target: { name: '', base: asker.mirrorUrl, path: (n) => blobPath(range(i + 1)(n)), check: found } },
      { node: asker.name, kind: 'miss', target: { name: '', base: asker.mirrorUrl, path: (n) => blobPath(absentDigest(asker.name)(n)), check: missing } },
    ]),
  ];
  for (const p of planned) p.target.name = seriesName(p.node, p.kind);

  // Warm-up apart from the timed series, so the histograms' difference holds only timed lookups.
  const offset = (target: HeadTarget, by: number): HeadTarget => {
    const path = target.path;
    const timed: HeadTarget = { ...target, path: typeof path === 'string' ? path : (n) => path(n + by) };
    const seen: number[] = [];
    statuses.set(timed, seen);
    timed.check = (res, p) => {
      seen.push(res.statusCode ?? 0);
      return target.check(res, p);
    };
    return timed;
  };
  if (init.warmup > 0) {
    const warm = await measureHeads({ targets: planned.map((p) => p.target), count: init.warmup, warmup: 0, batch: init.batch, signal: init.signal });
    const wrong = warm.flatMap((s) => Object.keys(s.problems).map((p) => `${s.name}: ${p}`));
    if (wrong.length > 0) throw new Error(`lookup warm-up answered wrong: ${wrong.join('; ')}`);
  }
  const before = await Promise.all(init.askers.map((a) => scrape(a.metricsUrl)));
  const timedTargets = planned.map((p) => offset(p.target, init.warmup));
  const timed = await measureHeads({
    targets: timedTargets,
    count: init.count,
    warmup: 0,
    batch: init.batch,
    signal: init.signal,
  });
  const after = await Promise.all(init.askers.map((a) => scrape(a.metricsUrl)));

  return {
    series: timed.map((s, i) => {
      const kind = planned[i]!.kind;
      const seen = statuses.get(timedTargets[i]!) ?? [];
      const notFound = kind === 'hit' ? seen.flatMap((status, n) => (status === 404 ? [n] : [])) : [];
      return { ...s, node: planned[i]!.node, kind, notFound };
    }),
    histograms: init.askers.map((a, i) => ({
      node: a.name,
      hit: subtract(parseHistogram(after[i]!, HISTOGRAM, { outcome: 'hit' }), parseHistogram(before[i]!, HISTOGRAM, { outcome: 'hit' })),
      miss: subtract(parseHistogram(after[i]!, HISTOGRAM, { outcome: 'miss' }), parseHistogram(before[i]!, HISTOGRAM, { outcome: 'miss' })),
      fromRecords: metricValue(after[i]!, LOOKUPS, { path: 'records' }) - metricValue(before[i]!, LOOKUPS, { path: 'records' }),
      fromNetwork: metricValue(after[i]!, LOOKUPS, { path: 'network' }) - metricValue(before[i]!, LOOKUPS, { path: 'network' }),
    })),
  };
}

async function scrape(metricsUrl: string): Promise<string> {
  const res = await fetch(`${metricsUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`${metricsUrl}/metrics: HTTP ${res.status}`);
  return res.text();
}
