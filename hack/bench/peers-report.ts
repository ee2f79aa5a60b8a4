/**
 * Part 2's figures from its raw samples, the issue's targets checked against
 * them, and its tables. As in part 1, a missed target is a result, a wrong
 * response (a failed or wrong pull, a wrong status) makes the run invalid.
 */
import { quantile, shareAtMost, total } from './histogram.ts';
import type { LookupSeries } from './lookups.ts';
import type { NodeMemory, PeersRun } from './peers.ts';
import type { PullSource } from './pulls.ts';
import type { Check } from './report.ts';
import { AS_SHIPPED } from './runtime-settings.ts';
import { median, percentile, summarize, type Summary } from './stats.ts';
import { mib, mibNumber, ms, table } from './table.ts';

const MiB = 2 ** 20;

/** The issue's targets for part 2. */
export const PEER_TARGETS = {
  /** DHT lookup hit, p99. */
  hitP99Ms: 20,
  /** A miss answered within. */
  missP99Ms: 30,
  /** Three nodes pulling from the one peer that has the image, over the same pulling from the registry (median wall time). */
  pullRatio: 1.1,
  /** The holder's peak RSS with the digests advertised. */
  holderPeakRssBytes: 150 * MiB,
} as const;

export interface LookupFigures {
  name: string;
  node: string;
  kind: LookupSeries['kind'];
  count: number;
  /** Hits answered 404 (no provider within the resolve timeout): counted as slower than any target in p50/p99. */
  notFound: number;
  p50: number;
  p99: number;
  max: number;
}

export interface ResolveFigures {
  node: string;
  hits: number;
  hitP50: number;
  hitP99: number;
  /** Share of hit lookups at or under the target. */
  hitWithinTarget: number | undefined;
  misses: number;
  missP50: number;
  missP99: number;
  /** Lookups answered from the node's own records, and by asking the network (undefined: a run from before the counter). */
  fromRecords: number | undefined;
  fromNetwork: number | undefined;
}

export interface PullFigures {
  source: PullSource;
  /** Wall time of a round, until the last of the three pulls ended (s). */
  wall: Summary;
  /** Each pull's own time (s). */
  perPull: Summary;
  /** Median CPU of the holder's mirror, and of the pullers' mirrors together, in cores. */
  holderCores: number;
  pullerCores: number;
  /** Median share of the machine's cores busy. */
  busy: number;
}

export interface PeersFigures {
  lookups: LookupFigures[];
  resolve: ResolveFigures[];
  pulls: PullFigures[];
  /** Median peers wall over median registry wall. */
  pullRatio: number;
  /** Per round: its peers wall over its registry wall. */
  pullRoundRatios: number[];
  /** Bytes each mirror served from its own containerd over all peer rounds. */
  servedBytes: Record<string, number>;
  checks: Check[];
  problems: string[];
}

export function computePeersFigures(run: PeersRun): PeersFigures {
  const problems: string[] = [];
  const series = run.lookups?.series ?? [];
  for (const s of series) for (const [p, n] of Object.entries(s.problems)) problems.push(`HEAD ${s.name}: ${n} x ${p}`);
  for (const r of run.pulls) for (const p of r.pulls) if (p.problem !== undefined) problems.push(`pull from ${r.source}, round ${r.round}, ${p.node}: ${p.problem}`);
  for (const r of run.pulls) if (r.source === 'peers' && r.upstreamBytes > 0) problems.push(`round ${r.round}: upstream sent ${r.upstreamBytes} bytes while stopped`);

  const lookups = series.map((s): LookupFigures => {
    const missed = new Set(s.notFound);
    const asHits = s.samplesMs.map((x, i) => (missed.has(i) ? Infinity : x));
    return {
      name: s.name,
      node: s.node,
      kind: s.kind,
      count: s.samplesMs.length,
      notFound: s.notFound.length,
      p50: percentile(asHits, 50),
      p99: percentile(asHits, 99),
      max: Math.max(...s.samplesMs),
    };
  });
  const resolve = (run.lookups?.histograms ?? []).map(
    (h): ResolveFigures => ({
      node: h.node,
      hits: total(h.hit),
      hitP50: quantile(h.hit, 0.5) * 1000,
      hitP99: quantile(h.hit, 0.99) * 1000,
      hitWithinTarget: shareAtMost(h.hit, PEER_TARGETS.hitP99Ms / 1000),
      misses: total(h.miss),
      missP50: quantile(h.miss, 0.5) * 1000,
      missP99: quantile(h.miss, 0.99) * 1000,
      fromRecords: h.fromRecords,
      fromNetwork: h.fromNetwork,
    }),
  );

  const good = run.pulls.filter((r) => r.pulls.every((p) => p.problem === undefined));
  const pulls = (['peers', 'upstream'] as const)
    .map((source) => good.filter((r) => r.source === source))
    .filter((rs) => rs.length > 0)
    .map(
      (rs): PullFigures => ({
        source: rs[0]!.source,
        wall: summarize(rs.map((r) => r.wallSeconds)),
        perPull: summarize(rs.flatMap((r) => r.pulls.map((p) => p.seconds))),
        holderCores: median(rs.map((r) => r.mirrorCores[run.nodes[0]?.name ?? ''] ?? 0)),
        pullerCores: median(rs.map((r) => run.pullers.reduce((sum, p) => sum + (r.mirrorCores[p] ?? 0), 0))),
        busy: median(rs.map((r) => r.busy)),
      }),
    );
  const wallOf = (source: PullSource) => pulls.find((p) => p.source === source)?.wall.median ?? NaN;
  const pullRatio = wallOf('peers') / wallOf('upstream');
  const pullRoundRatios: number[] = [];
  for (const r of good.filter((x) => x.source === 'peers')) {
    const ref = good.find((x) => x.source === 'upstream' && x.round === r.round);
    if (ref !== undefined) pullRoundRatios.push(r.wallSeconds / ref.wallSeconds);
  }
  const servedBytes: Record<string, number> = {};
  for (const r of good.filter((x) => x.source === 'peers')) for (const [node, b] of Object.entries(r.servedBytes)) servedBytes[node] = (servedBytes[node] ?? 0) + b;

  const checks: Check[] = [];
  for (const l of lookups.filter((x) => x.kind === 'hit')) {
    const value = l.p99 === Infinity ? `not found (${l.notFound} of ${l.count} 404)` : `${ms(l.p99)} ms`;
    checks.push({ what: `DHT hit p99, HEAD through the mirror, ${l.node}`, value, target: `<= ${PEER_TARGETS.hitP99Ms} ms`, pass: l.p99 <= PEER_TARGETS.hitP99Ms });
  }
  for (const r of resolve) {
    const pass = r.hitWithinTarget !== undefined && r.hitWithinTarget >= 0.99;
    const within = r.hitWithinTarget === undefined ? '' : `, ${(r.hitWithinTarget * 100).toFixed(1)}% <= ${PEER_TARGETS.hitP99Ms} ms`;
    checks.push({ what: `DHT hit p99, lookup alone (histogram), ${r.node}`, value: `${ms(r.hitP99, 1)} ms${within}`, target: `<= ${PEER_TARGETS.hitP99Ms} ms`, pass });
  }
  for (const l of lookups.filter((x) => x.kind === 'miss')) {
    checks.push({ what: `DHT miss answered, HEAD p99, ${l.node}`, value: `${ms(l.p99)} ms`, target: `<= ${PEER_TARGETS.missP99Ms} ms`, pass: l.p99 <= PEER_TARGETS.missP99Ms });
  }
  if (pulls.length === 2) {
    checks.push({ what: '3 nodes pull: from 1 peer / from registry (median wall)', value: pullRatio.toFixed(2), target: `<= ${PEER_TARGETS.pullRatio}`, pass: pullRatio <= PEER_TARGETS.pullRatio });
  }
  const holder = run.memorySettled[0];
  if (holder !== undefined && run.many !== undefined) {
    const peak = holder.memory.hwm ?? 0;
    checks.push({
      what: `peak RSS, holder advertising ${run.many.keys + (run.image === undefined ? 0 : run.image.layers + 3)} keys (as shipped)`,
      value: mib(peak),
      target: `<= ${mib(PEER_TARGETS.holderPeakRssBytes)}`,
      pass: peak > 0 && peak <= PEER_TARGETS.holderPeakRssBytes,
    });
  }
  return { lookups, resolve, pulls, pullRatio, pullRoundRatios, servedBytes, checks, problems };
}

/** `reference`: the peak the last column divides by, and the rows it comes from (left blank). */
function memoryTable(rows: NodeMemory[], reference?: { peak: number; rows: NodeMemory[]; label: string }): string {
  return table(
    ['node', 'role', 'setting', 'peak', 'cgroup peak', 'RSS', 'anon', 'file', 'new', 'old (used)', 'external', ...(reference ? [reference.label] : []), 'CPU s'],
    rows.map((r) => {
      const m = r.memory;
      const ratio = reference === undefined ? [] : [m.hwm === undefined || reference.rows.includes(r) ? '' : (m.hwm / reference.peak).toFixed(2)];
      return [
        r.node,
        r.role,
        r.setting,
        mibNumber(m.hwm),
        mibNumber(m.cgroupPeak),
        mibNumber(m.rss),
        mibNumber(m.rssAnon),
        mibNumber(m.rssFile),
        mibNumber(m.heapNew),
        `${mibNumber(m.heapOld)} (${mibNumber(m.heapOldUsed)})`,
        mibNumber(m.external),
        ...ratio,
        m.cpuSeconds.toFixed(1),
      ];
    }),
  );
}

export interface PeersReportContext {
  digests: number;
  lookups: number;
  pullRounds: number;
}

export function formatPeersReport(f: PeersFigures, run: PeersRun, ctx: PeersReportContext): string {
  const out: string[] = [];
  const image = run.image;
  out.push(`PART 2: peer network, ${run.nodes.length} nodes (containerd + mirror each, one DHT)`);
  out.push('');
  out.push(
    `Mirror memory once ${run.nodes[0]?.name ?? 'the holder'} advertises ${ctx.digests} tiny layers (+ ${image?.layers ?? 0}-layer image), every other node storing its records;` +
      ` provides settled ${run.settleSeconds === undefined ? 'never' : `after ${run.settleSeconds.toFixed(0)} s`}`,
  );
  out.push('(MiB; peak = VmHWM since start; cgroup peak = what a container limit counts, for the mirror run in one;');
  out.push(' anon = the process\'s own resident memory, file = mapped files, mostly the shared node binary;');
  out.push(' new = V8 young generation committed; old = old space committed (used, garbage included); external = Buffer bytes outside the V8 heap)');
  const holder = run.memorySettled[0];
  const shipped = run.memorySettled.filter((r) => r !== holder && r.setting === AS_SHIPPED.name);
  const shippedPeak = median(shipped.map((r) => r.memory.hwm ?? NaN));
  out.push(memoryTable(run.memorySettled, { peak: shippedPeak, rows: shipped, label: 'peak / median as shipped' }));
  out.push(`the same load on every node but the holder: it stores every record the holder provides; ${shipped.length} nodes as shipped, median peak ${mib(shippedPeak)}`);
  const [again, ...others] = run.holderAgain;
  if (again?.memory.memory.hwm !== undefined) {
    out.push('');
    const settled = run.holderAgain.map((h) => `${h.memory.setting} after ${h.settleSeconds.toFixed(0)} s`).join(', ');
    out.push(`The holder restarted after the pulls, advertising everything again: as shipped, then with a runtime setting; provides settled ${settled}`);
    out.push(memoryTable([again.memory, ...others.map((h) => h.memory)], { peak: again.memory.memory.hwm, rows: [again.memory], label: 'peak / as shipped' }));
  }
  out.push('');
  out.push('Memory at the end (after the lookups and the pulls)');
  out.push(memoryTable(run.memoryEnd));
  out.push('');

  const askers = new Map(run.askers.map((a) => [a.name, a.how]));
  if (run.restartedRecordsSeconds !== undefined) {
    out.push(`The restarted asker held every record of the network ${run.restartedRecordsSeconds.toFixed(1)} s after its mirror was stopped (stop, start, peers, its peers' answers)`);
  }
  out.push(`DHT lookups: HEAD blob by digest through a node's mirror, ${ctx.lookups} sequential requests per series, each for a digest of its own (ms; n/f: a hit answered 404 counts as slower than any time)`);
  out.push(
    table(
      ['series', 'asker', 'count', '404 (not found in time)', 'p50', 'p99', 'max'],
      f.lookups.map((l) => [
        l.name,
        l.kind === 'local' ? 'holds the blob' : (askers.get(l.node) ?? ''),
        String(l.count),
        l.kind === 'hit' ? String(l.notFound) : l.kind === 'miss' ? 'all, as due' : '',
        l.p50 === Infinity ? 'n/f' : ms(l.p50),
        l.p99 === Infinity ? 'n/f' : ms(l.p99),
        ms(l.max),
      ]),
    ),
  );
  out.push('');
  out.push('The lookup alone, from the mirrors\' shoal_resolve_duration_seconds over the timed series (ms; interpolated within buckets)');
  out.push(
    table(
      ['node', 'hit lookups', 'hit p50', 'hit p99', `hits <= ${PEER_TARGETS.hitP99Ms} ms`, 'miss lookups', 'miss p50', 'miss p99', 'from own records', 'asked the network'],
      f.resolve.map((r) => [
        r.node,
        String(r.hits),
        ms(r.hitP50, 1),
        ms(r.hitP99, 1),
        r.hitWithinTarget === undefined ? '-' : `${(r.hitWithinTarget * 100).toFixed(1)}%`,
        String(r.misses),
        ms(r.missP50, 1),
        ms(r.missP99, 1),
        r.fromRecords === undefined ? '-' : String(r.fromRecords),
        r.fromNetwork === undefined ? '-' : String(r.fromNetwork),
      ]),
    ),
  );
  out.push('');
  const imageMiB = image === undefined ? 0 : image.size / MiB;
  out.push(
    `Pulls: ${run.pullers.join(', ')} pull a ${imageMiB.toFixed(0)} MiB, ${image?.layers ?? 0}-layer image at once (ctr images pull: fetch + unpack), cold each time, ${ctx.pullRounds} alternating rounds (s)`,
  );
  out.push(
    table(
      ['source', 'rounds', 'wall median', 'min', 'max', 'each pull, median', "holder's mirror (cores)", "pullers' mirrors (cores)", 'machine busy'],
      f.pulls.map((p) => [
        p.source === 'peers' ? `from ${run.nodes[0]?.name ?? 'the holder'} through the mirrors, upstream stopped` : 'straight from the registry, no mirror',
        String(p.wall.count),
        p.wall.median.toFixed(2),
        p.wall.min.toFixed(2),
        p.wall.max.toFixed(2),
        p.perPull.median.toFixed(2),
        p.holderCores.toFixed(2),
        p.pullerCores.toFixed(2),
        `${Math.round(p.busy * 100)}%`,
      ]),
    ),
  );
  const rounds = f.pullRoundRatios.map((r) => r.toFixed(2)).join(', ');
  out.push(`ratio of medians ${ms(f.pullRatio)}; same-round ratios ${rounds === '' ? '-' : rounds}`);
  const served = Object.entries(f.servedBytes).map(([node, b]) => `${node} ${(b / MiB).toFixed(0)} MiB`);
  out.push(`served by each mirror over the peer rounds: ${served.length === 0 ? '-' : served.join(', ')} (median per round ${median(run.pulls.filter((r) => r.source === 'peers').map((r) => Object.values(r.servedBytes).reduce((a, b) => a + b, 0) / MiB)).toFixed(0)} MiB)`);
  return out.join('\n');
}
