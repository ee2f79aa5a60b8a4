/**
 * From raw phases to figures: latency percentiles over every review of a
 * kind, reviews per second as the median of the rounds, each beside the echo
 * reference's from the same rounds, and the issue's targets with PASS/MISS.
 */
import { SCENARIO_TITLES, type LookupFigures, type PhaseRecord, type Role, type ScenarioKey } from './scenarios.ts';

export interface ServerFigures {
  /** One connection: every latency-phase review of all rounds. */
  latency: { count: number; p50: number; p99: number; max: number };
  /** Several connections: reviews/s per round, their median, and the latency under that load. */
  load: { perRound: number[]; reviewsPerS: number; p50: number; p99: number; max: number };
  /**
   * Cores used during the load phases: the whole server process, its main thread, the client; and
   * the server's CPU time per review in µs, which depends much less on what else the machine runs.
   */
  cpu: { server: number; mainThread: number; client: number; machineBusy: number; machineSteal: number; serverUsPerReview: number; mainUsPerReview: number };
  /** Connections opened while timing (keep-alive should make this 0). */
  newConnections: number;
  /** Answers that failed the check. */
  wrong: number;
}

export type ScenarioFigures = Record<Role, ServerFigures>;
export type Figures = Partial<Record<ScenarioKey, ScenarioFigures>>;

export interface Target {
  readonly what: string;
  readonly scenario: ScenarioKey;
  readonly value: (s: ScenarioFigures) => number;
  readonly unit: string;
  readonly limit: number;
  readonly kind: 'at most' | 'at least';
}

export const TARGETS: readonly Target[] = [
  { what: 'cache hits: p99 (1 connection)', scenario: 'hit', value: (s) => s.shoal.latency.p99, unit: 'ms', limit: 5, kind: 'at most' },
  { what: 'cache hits: reviews/s', scenario: 'hit', value: (s) => s.shoal.load.reviewsPerS, unit: '/s', limit: 1000, kind: 'at least' },
  { what: 'through peers: p99 (1 connection)', scenario: 'peers', value: (s) => s.shoal.latency.p99, unit: 'ms', limit: 50, kind: 'at most' },
];

/** Nearest-rank percentile (p in 0..100) of sorted samples. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.max(1, Math.ceil((p / 100) * sorted.length)) - 1]!;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length === 0 ? NaN : sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function spread(samples: number[]) {
  const sorted = samples.sort((a, b) => a - b);
  return { count: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? NaN };
}

/** Load phases shorter than this in all get no CPU figures ('-'). */
const MIN_CPU_SECONDS = 0.5;

function serverFigures(phases: readonly PhaseRecord[]): ServerFigures {
  const latency = phases.filter((p) => p.phase === 'latency');
  const load = phases.filter((p) => p.phase === 'load');
  const loadSeconds = load.reduce((sum, p) => sum + p.wallMs / 1000, 0);
  // Weighted by each phase's length: the cores used over all load phases together.
  // CPU time comes in ticks (10 ms): over less than this it says little.
  const timed = loadSeconds >= MIN_CPU_SECONDS;
  const busySeconds = (cores: (p: PhaseRecord) => number) => load.reduce((sum, p) => sum + cores(p) * (p.wallMs / 1000), 0);
  const weighted = (cores: (p: PhaseRecord) => number) => (timed ? busySeconds(cores) / loadSeconds : NaN);
  const loadReviews = load.reduce((sum, p) => sum + p.reviews, 0);
  const usPerReview = (cores: (p: PhaseRecord) => number) => (timed ? (busySeconds(cores) / loadReviews) * 1e6 : NaN);
  const mainThread = (p: PhaseRecord) => p.cpu.serverThreads['MainThread'] ?? 0;
  const loadSpread = spread(load.flatMap((p) => p.latenciesMs));
  return {
    latency: spread(latency.flatMap((p) => p.latenciesMs)),
    load: { perRound: load.map((p) => p.reviewsPerS), reviewsPerS: median(load.map((p) => p.reviewsPerS)), p50: loadSpread.p50, p99: loadSpread.p99, max: loadSpread.max },
    cpu: {
      server: weighted((p) => p.cpu.server),
      mainThread: weighted(mainThread),
      client: weighted((p) => p.cpu.client),
      machineBusy: weighted((p) => p.cpu.machineBusy),
      machineSteal: weighted((p) => p.cpu.machineSteal),
      serverUsPerReview: usPerReview((p) => p.cpu.server),
      mainUsPerReview: usPerReview(mainThread),
    },
    newConnections: phases.reduce((sum, p) => sum + p.newConnections, 0),
    wrong: phases.reduce((sum, p) => sum + p.wrong.length, 0),
  };
}

export function computeFigures(records: readonly PhaseRecord[]): Figures {
  const figures: Figures = {};
  for (const scenario of Object.keys(SCENARIO_TITLES) as ScenarioKey[]) {
    const own = records.filter((r) => r.scenario === scenario);
    if (own.length === 0) continue;
    figures[scenario] = { echo: serverFigures(own.filter((r) => r.role === 'echo')), shoal: serverFigures(own.filter((r) => r.role === 'shoal')) };
  }
  return figures;
}

export interface TargetResult {
  readonly target: Target;
  readonly value: number;
  readonly met: boolean;
}

export function checkTargets(figures: Figures): TargetResult[] {
  return TARGETS.filter((t) => figures[t.scenario] !== undefined).map((target) => {
    const value = target.value(figures[target.scenario]!);
    return { target, value, met: target.kind === 'at most' ? value <= target.limit : value >= target.limit };
  });
}

const ms = (n: number) => (Number.isNaN(n) ? '-' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0));
const rate = (n: number) => (Number.isNaN(n) ? '-' : n.toFixed(0));
const cores = (n: number) => (Number.isNaN(n) ? '-' : n.toFixed(2));
const times = (n: number) => (Number.isFinite(n) ? `x${n.toFixed(2)}` : '-');

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function formatReport(figures: Figures, connections: number, lookups: Partial<Record<ScenarioKey, LookupFigures>>): string {
  const header = ['scenario', 'server', 'n', 'p50 ms', 'p99 ms', 'max ms', 'reviews/s', 'p50@load', 'p99@load', 'CPU srv', 'main thr', 'us/review', 'CPU client', 'wrong'];
  const rows: string[][] = [];
  for (const [scenario, s] of Object.entries(figures) as [ScenarioKey, ScenarioFigures][]) {
    for (const role of ['echo', 'shoal'] as const) {
      const f = s[role];
      rows.push([
        role === 'echo' ? SCENARIO_TITLES[scenario] : '',
        role,
        String(f.latency.count),
        ms(f.latency.p50),
        ms(f.latency.p99),
        ms(f.latency.max),
        rate(f.load.reviewsPerS),
        ms(f.load.p50),
        ms(f.load.p99),
        cores(f.cpu.server),
        cores(f.cpu.mainThread),
        rate(f.cpu.serverUsPerReview),
        cores(f.cpu.client),
        String(f.wrong),
      ]);
    }
    const e = s.echo;
    const w = s.shoal;
    rows.push(['', 'shoal/echo', '', times(w.latency.p50 / e.latency.p50), times(w.latency.p99 / e.latency.p99), '', times(w.load.reviewsPerS / e.load.reviewsPerS), times(w.load.p50 / e.load.p50), times(w.load.p99 / e.load.p99), '', '', times(w.cpu.serverUsPerReview / e.cpu.serverUsPerReview), '', '']);
  }
  const pct = (n: number) => (Number.isNaN(n) ? '-' : `${(n * 100).toFixed(0)}%`);
  const perRound = (Object.entries(figures) as [ScenarioKey, ScenarioFigures][]).map(([scenario, s]) => {
    const machine = `machine busy ${pct(s.echo.cpu.machineBusy)} / ${pct(s.shoal.cpu.machineBusy)}, steal ${pct(s.echo.cpu.machineSteal)} / ${pct(s.shoal.cpu.machineSteal)}`;
    return `  ${SCENARIO_TITLES[scenario]}: echo ${s.echo.load.perRound.map(rate).join(' ')}; shoal ${s.shoal.load.perRound.map(rate).join(' ')}  (${machine})`;
  });
  const us = (n: number) => `${rate(n)} µs`;
  const cpuLines = (Object.entries(figures) as [ScenarioKey, ScenarioFigures][]).map(([scenario, s]) => {
    const ceiling = 1e6 / s.shoal.cpu.mainUsPerReview;
    const echo = Number.isNaN(s.echo.cpu.serverUsPerReview) ? 'echo -' : `echo ${us(s.echo.cpu.serverUsPerReview)} / ${us(s.echo.cpu.mainUsPerReview)}`;
    return `  ${SCENARIO_TITLES[scenario]}: ${echo}; shoal ${us(s.shoal.cpu.serverUsPerReview)} / ${us(s.shoal.cpu.mainUsPerReview)} (its main thread alone on a core: at most ~${rate(ceiling)} reviews/s)`;
  });
  const lookupLines = (Object.entries(lookups) as [ScenarioKey, LookupFigures][]).map(
    ([scenario, l]) => `  ${SCENARIO_TITLES[scenario]}: ${l.hits} found a provider, first after ${ms(l.hitMeanMs)} ms on average; ${l.misses} found none${l.misses > 0 ? ` (given up after ${ms(l.missMeanMs)} ms on average)` : ''}`,
  );
  const newConnections = Object.values(figures).reduce((sum, s) => sum + s.echo.newConnections + s.shoal.newConnections, 0);
  return [
    `p50/p99/max: one connection, one review at a time. reviews/s (median of rounds), p50/p99@load: ${connections} keep-alive connections.`,
    'CPU: cores used during the load phases (server process, its JavaScript main thread, the load client); us/review: the',
    `server's CPU time per review under load (it depends far less on the machine's other load); '-': load phases under ${MIN_CPU_SECONDS} s in all,`,
    'too short for the 10 ms CPU ticks. wrong: answers failing the check.',
    '',
    table(header, rows),
    '',
    'reviews/s per round (machine busy and steal during the load phases, echo / shoal):',
    ...perRound,
    'CPU per review under load (process / its JavaScript main thread):',
    ...cpuLines,
    ...(lookupLines.length > 0 ? ["the webhook's DHT lookups (its shoal_resolve_duration_seconds):", ...lookupLines] : []),
    `connections opened while timing: ${newConnections} (keep-alive held when 0)`,
  ].join('\n');
}

export function formatTargets(results: readonly TargetResult[]): string {
  const rows = results.map((r) => [
    r.target.what,
    `${r.target.kind === 'at most' ? '<=' : '>='} ${r.target.limit}${r.target.unit === 'ms' ? ' ms' : '/s'}`,
    r.target.unit === 'ms' ? `${ms(r.value)} ms` : `${rate(r.value)}/s`,
    r.met ? 'PASS' : 'MISS',
  ]);
  return table(['target', 'limit', 'measured', ''], rows);
}
