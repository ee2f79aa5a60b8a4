/**
 * Part 3's figures from its rounds, the issue's targets checked against them,
 * and its table. A failed or wrong pull makes the run invalid; a missed target
 * is a result.
 */
import { cpus } from 'node:os';
import type { Check } from './report.ts';
import { median, summarize, type Summary } from './stats.ts';
import { mibNumber, table } from './table.ts';
import { UPSTREAM_KINDS, type UpstreamKind, type UpstreamRun } from './upstream.ts';

/** The targets for part 3. */
export const UPSTREAM_TARGETS = {
  /** Bytes from upstream when every node pulls through Shoal, over one pull's bytes (worst round). */
  bytesRatio: 1.05,
  /** Every node pulling through Shoal, over one node's cold pull with containerd alone (median wall times). */
  wallRatio: 1.3,
} as const;

export interface KindFigures {
  kind: UpstreamKind;
  wall: Summary;
  /** Median bytes from upstream. */
  upstreamBytes: number;
  /** Most GETs of one blob in a round. */
  maxGetsPerBlob: number;
  /** Median CPU of all mirrors together, in cores. */
  mirrorCores: number;
  /** Median CPU of the containerd daemons, and of the ctr clients, in cores. */
  containerdCores: number;
  ctrCores: number;
  /** Median share of the machine's cores busy. */
  busy: number;
}

export interface UpstreamFigures {
  kinds: KindFigures[];
  bytesRatio: number;
  wallRatio: number;
  /** One node through Shoal over one node alone: a lone pull must not be slower. */
  loneRatio: number;
  /** Every node through Shoal over every node alone with a link each: Shoal's cost over what this machine allows. */
  floorRatio: number;
  checks: Check[];
  problems: string[];
}

export function computeUpstreamFigures(run: UpstreamRun): UpstreamFigures {
  const problems = run.rounds.flatMap((r) => r.pulls.filter((p) => p.problem !== undefined).map((p) => `part 3, round ${r.round}, ${r.kind}, ${p.node}: ${p.problem}`));
  const kinds = UPSTREAM_KINDS.map((kind): KindFigures => {
    const rounds = run.rounds.filter((r) => r.kind === kind);
    return {
      kind,
      wall: summarize(rounds.map((r) => r.wallSeconds)),
      upstreamBytes: median(rounds.map((r) => r.upstreamBytes)),
      maxGetsPerBlob: Math.max(0, ...rounds.flatMap((r) => Object.values(r.blobGets))),
      mirrorCores: median(rounds.map((r) => Object.values(r.mirrorCores).reduce((a, b) => a + b, 0))),
      containerdCores: median(rounds.map((r) => r.containerdCores)),
      ctrCores: median(rounds.map((r) => r.ctrCores)),
      busy: median(rounds.map((r) => r.busy)),
    };
  });
  const imageBytes = run.imageBytes ?? NaN;
  const worstBytes = Math.max(...run.rounds.filter((r) => r.kind === 'shoal-all').map((r) => r.upstreamBytes));
  const bytesRatio = worstBytes / imageBytes;
  const wallRatio = of(kinds, 'shoal-all').wall.median / of(kinds, 'direct-one').wall.median;
  const loneRatio = of(kinds, 'shoal-one').wall.median / of(kinds, 'direct-one').wall.median;
  const floorRatio = of(kinds, 'shoal-all').wall.median / of(kinds, 'floor-all').wall.median;
  const n = run.nodes.length;
  const checks: Check[] = [
    {
      what: `part 3: bytes from upstream, ${n} nodes through Shoal / one pull`,
      value: bytesRatio.toFixed(3),
      target: `<= ${UPSTREAM_TARGETS.bytesRatio}`,
      pass: bytesRatio <= UPSTREAM_TARGETS.bytesRatio,
    },
    {
      what: `part 3: wall, ${n} nodes through Shoal / one node, containerd alone`,
      value: wallRatio.toFixed(2),
      target: `<= ${UPSTREAM_TARGETS.wallRatio}`,
      pass: wallRatio <= UPSTREAM_TARGETS.wallRatio,
    },
  ];
  return { kinds, bytesRatio, wallRatio, loneRatio, floorRatio, checks, problems };
}

const DESCRIPTION: Record<UpstreamKind, string> = {
  'direct-one': 'one node, containerd alone',
  'direct-all': 'every node, containerd alone',
  'shoal-all': 'every node, through Shoal',
  'shoal-one': 'one node, through Shoal',
  'floor-all': 'every node, alone, a link each',
};

export function formatUpstreamReport(f: UpstreamFigures, run: UpstreamRun): string {
  const out: string[] = [];
  out.push(`PART 3: upstream fallback, ${run.nodes.length} nodes, upstream at ${run.rateMbit} Mbit/s, image ${mibNumber(run.imageBytes, 1)} MiB, cold each time\n`);
  out.push(
    table(
      ['pull', 'rounds', 'wall median (s)', 'min-max (s)', 'from upstream (MiB)', 'most GETs of a blob', 'cores: mirrors', 'containerd', 'ctr', 'machine busy'],
      f.kinds.map((k) => [
        DESCRIPTION[k.kind],
        String(k.wall.count),
        k.wall.median.toFixed(2),
        `${k.wall.min.toFixed(2)}-${k.wall.max.toFixed(2)}`,
        mibNumber(k.upstreamBytes),
        String(k.maxGetsPerBlob),
        k.kind.startsWith('shoal') ? k.mirrorCores.toFixed(2) : '-',
        k.containerdCores.toFixed(2),
        k.ctrCores.toFixed(2),
        `${(k.busy * 100).toFixed(0)}%`,
      ]),
    ),
  );
  out.push(`one node through Shoal / containerd alone: ${f.loneRatio.toFixed(2)} (a lone pull should not be slower)`);
  out.push(
    `every node through Shoal / every node alone with a link each: ${f.floorRatio.toFixed(2)} ` +
      `(the floor: ${of(f.kinds, 'floor-all').wall.median.toFixed(2)} s, ${(of(f.kinds, 'floor-all').wall.median / of(f.kinds, 'direct-one').wall.median).toFixed(2)} x one node, is what ${run.nodes.length} nodes pulling at once cost this machine without any sharing)`,
  );
  const all = of(f.kinds, 'shoal-all');
  const cores = cpus().length;
  // Every simulated node's containerd shares this machine's cores: a round that fills them measures the machine.
  if (all.busy > 0.9) {
    out.push(
      `every node through Shoal was CPU-bound: ${(all.busy * 100).toFixed(0)}% of ${cores} cores busy; the nodes' containerd and ctr took ` +
        `${(all.containerdCores + all.ctrCores).toFixed(2)} cores of it, as much as ${((all.containerdCores + all.ctrCores) * all.wall.median / cores).toFixed(1)} s of the whole machine, the mirrors ${all.mirrorCores.toFixed(2)}`,
    );
  }
  out.push('cores: CPU over the wall time (1 = one core busy throughout); machine busy: share of all cores.');
  return out.join('\n');
}

function of(kinds: readonly KindFigures[], kind: UpstreamKind): KindFigures {
  return kinds.find((k) => k.kind === kind)!;
}
