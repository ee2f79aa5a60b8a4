/**
 * A Prometheus histogram read from /metrics, before and after a series: the
 * difference is the series' own observations, and its quantiles are computed
 * as Prometheus' histogram_quantile does (linear within the bucket), so they
 * are bounded by the bucket edges, not exact.
 */

export interface Buckets {
  /** Upper bounds in seconds, ascending, +Inf last. */
  le: number[];
  /** Cumulative counts, one per bound. */
  counts: number[];
  sum: number;
}

/** The histogram `name` with these labels from Prometheus text; all zeros when absent. */
export function parseHistogram(text: string, name: string, labels: Record<string, string>): Buckets {
  const byLe = new Map<number, number>();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} ([0-9.eE+-]+|NaN)$/.exec(line) ?? /^([a-zA-Z_:][a-zA-Z0-9_:]*)() ([0-9.eE+-]+|NaN)$/.exec(line);
    if (!m) continue;
    const have = new Map<string, string>();
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) have.set(pair[1]!, pair[2]!);
    if (!Object.entries(labels).every(([k, v]) => have.get(k) === v)) continue;
    if (m[1] === `${name}_bucket`) {
      const le = have.get('le');
      if (le !== undefined) byLe.set(le === '+Inf' ? Infinity : Number(le), Number(m[3]));
    } else if (m[1] === `${name}_sum`) {
      sum = Number(m[3]);
    }
  }
  const le = [...byLe.keys()].sort((a, b) => a - b);
  return { le, counts: le.map((b) => byLe.get(b)!), sum };
}

/** after - before, bucket by bucket (the same bounds: the same histogram). */
export function subtract(after: Buckets, before: Buckets): Buckets {
  const counts = after.le.map((b, i) => after.counts[i]! - (before.counts[before.le.indexOf(b)] ?? 0));
  return { le: after.le, counts, sum: after.sum - before.sum };
}

export function total(b: Buckets): number {
  return b.counts.at(-1) ?? 0;
}

/** histogram_quantile(q, b) in seconds; NaN without observations; the highest finite bound if it falls in +Inf. */
export function quantile(b: Buckets, q: number): number {
  const n = total(b);
  if (n === 0) return NaN;
  const rank = q * n;
  for (let i = 0; i < b.le.length; i++) {
    if (b.counts[i]! < rank) continue;
    const upper = b.le[i]!;
    const lower = i === 0 ? 0 : b.le[i - 1]!;
    if (upper === Infinity) return lower;
    const below = i === 0 ? 0 : b.counts[i - 1]!;
    const inBucket = b.counts[i]! - below;
    return inBucket === 0 ? upper : lower + ((upper - lower) * (rank - below)) / inBucket;
  }
  return b.le.at(-2) ?? NaN;
}

/** Share of observations at or below `seconds`, when that is a bucket bound (else undefined). */
export function shareAtMost(b: Buckets, seconds: number): number | undefined {
  const i = b.le.findIndex((x) => Math.abs(x - seconds) < 1e-12);
  const n = total(b);
  return i < 0 || n === 0 ? undefined : b.counts[i]! / n;
}
