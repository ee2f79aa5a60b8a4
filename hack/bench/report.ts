/**
 * Figures from the raw samples, the targets of the issue checked against
 * them, and the table printed at the end of a run. A missed target is a
 * result to report, not a failure of the bench.
 */
import { HEAD_REFERENCE, SERVERS } from './fixture.ts';
import type { HeadSeries } from './head.ts';
import type { MemorySnapshot } from './memory.ts';
import { percentile, summarize, type Summary } from './stats.ts';
import { mib, mibNumber, table } from './table.ts';
import type { Transfer } from './throughput.ts';

const MiB = 2 ** 20;


/** The targets. */
export const TARGETS = {
  /** Mirror GET throughput over nginx's, reading containerd's files. */
  filesRatio: 0.8,
  /** The same, reading through containerd's Content.Read gRPC. */
  grpcRatio: 0.4,
  /** HEAD manifest by tag, p99. */
  headP99Ms: 5,
  /** VmHWM of a mirror process over the whole run. */
  peakRssBytes: 128 * MiB,
} as const;

export interface MemoryReading {
  /** VmHWM after start-up, after the GET rounds, after the HEAD series; VmRSS at the end. */
  hwmIdle: number | undefined;
  hwmAfterGet: number | undefined;
  hwmAfterHead: number | undefined;
  rssEnd: number | undefined;
}

export interface ThroughputFigures {
  server: string;
  /** MiB/s over the good timed transfers. */
  mibPerSecond: Summary;
  /** Median CPU use of the server's processes during a transfer, in cores (1 = one core busy). */
  cores: Record<string, number>;
  /** The same by thread name, for processes measured by thread. */
  threadCores: Record<string, Record<string, number>>;
  /** Median of this server's over nginx's median. */
  ratioToNginx: number;
  /** This server's rate over nginx's in the same round, per round: how much the ratio moves with the noise. */
  roundRatios: Summary;
}

export interface HeadFigures {
  target: string;
  count: number;
  p50: number;
  p99: number;
  max: number;
  reusedConnections: number;
}

export interface Check {
  what: string;
  value: string;
  target: string;
  pass: boolean;
}

export interface Figures {
  throughput: ThroughputFigures[];
  heads: HeadFigures[];
  memory: Record<string, MemoryReading>;
  /** Kernel and V8 view of each mirror at the end. */
  memoryEnd: Record<string, MemorySnapshot>;
  checks: Check[];
  /** Wrong responses: a run with any is invalid. */
  problems: string[];
  /** Median shares of the machine's cores busy and stolen during the timed transfers. */
  system: { busy: number; steal: number };
}

export function computeFigures(transfers: Transfer[], heads: HeadSeries[], memory: Record<string, MemoryReading>, memoryEnd: Record<string, MemorySnapshot>): Figures {
  const problems: string[] = [];
  for (const t of transfers) if (t.problem !== undefined) problems.push(`GET ${t.server}, round ${t.round}: ${t.problem}`);
  for (const h of heads) for (const [p, n] of Object.entries(h.problems)) problems.push(`HEAD ${h.name}: ${n} x ${p}`);

  const timed = transfers.filter((t) => t.round > 0 && t.problem === undefined);
  const servers = [...new Set(transfers.map((t) => t.server))];
  const medianOf = (xs: number[]): number => summarize(xs).median;
  const nginxMedian = medianOf(timed.filter((t) => t.server === SERVERS.nginx).map((t) => t.bytesPerSecond / MiB));
  const throughput = servers.map((server): ThroughputFigures => {
    const mine = timed.filter((t) => t.server === server);
    const rates = mine.map((t) => t.bytesPerSecond / MiB);
    const labels = [...new Set(mine.flatMap((t) => Object.keys(t.cpuSeconds)))];
    const cores = Object.fromEntries(labels.map((l) => [l, medianOf(mine.map((t) => (t.cpuSeconds[l] ?? 0) / t.seconds))]));
    const threadCores: Record<string, Record<string, number>> = {};
    for (const label of new Set(mine.flatMap((t) => Object.keys(t.threadCpuSeconds)))) {
      const names = [...new Set(mine.flatMap((t) => Object.keys(t.threadCpuSeconds[label] ?? {})))];
      threadCores[label] = Object.fromEntries(names.map((n) => [n, medianOf(mine.map((t) => (t.threadCpuSeconds[label]?.[n] ?? 0) / t.seconds))]));
    }
    const mibPerSecond = summarize(rates);
    const roundRatios: number[] = [];
    for (const t of mine) {
      const ref = timed.find((x) => x.server === SERVERS.nginx && x.round === t.round);
      if (ref !== undefined) roundRatios.push(t.bytesPerSecond / ref.bytesPerSecond);
    }
    return { server, mibPerSecond, cores, threadCores, ratioToNginx: mibPerSecond.median / nginxMedian, roundRatios: summarize(roundRatios) };
  });

  const headFigures = heads.map(
    (h): HeadFigures => ({
      target: h.name,
      count: h.samplesMs.length,
      p50: percentile(h.samplesMs, 50),
      p99: percentile(h.samplesMs, 99),
      max: Math.max(...h.samplesMs),
      reusedConnections: h.reusedConnections,
    }),
  );

  const checks: Check[] = [];
  const ratio = (server: string, target: number): void => {
    const f = throughput.find((x) => x.server === server);
    if (f) checks.push({ what: `GET ${server} / nginx`, value: f.ratioToNginx.toFixed(2), target: `>= ${target}`, pass: f.ratioToNginx >= target });
  };
  ratio(SERVERS.files, TARGETS.filesRatio);
  ratio(SERVERS.hashed, TARGETS.filesRatio);
  ratio(SERVERS.grpc, TARGETS.grpcRatio);
  for (const h of headFigures.filter((x) => x.target !== HEAD_REFERENCE)) {
    checks.push({ what: `HEAD by tag p99, ${h.target}`, value: `${h.p99.toFixed(2)} ms`, target: `<= ${TARGETS.headP99Ms} ms`, pass: h.p99 <= TARGETS.headP99Ms });
  }
  // The targets are the shipped mirror's; the runtime settings are compared, not checked.
  for (const [name, m] of Object.entries(memory).filter(([n]) => n === SERVERS.files || n === SERVERS.grpc)) {
    const peak = Math.max(m.hwmIdle ?? 0, m.hwmAfterGet ?? 0, m.hwmAfterHead ?? 0);
    checks.push({ what: `peak RSS, ${name}`, value: mib(peak), target: `<= ${mib(TARGETS.peakRssBytes)}`, pass: peak > 0 && peak <= TARGETS.peakRssBytes });
  }

  return {
    throughput,
    heads: headFigures,
    memory,
    memoryEnd,
    checks,
    problems,
    system: { busy: medianOf(timed.map((t) => t.system.busy)), steal: medianOf(timed.map((t) => t.system.steal)) },
  };
}

/** Node's thread names, in the order of the CPU table's columns. */
const THREAD_COLUMNS = ['MainThread', 'V8Worker', 'WorkerThread', 'libuv-worker'];

export interface ReportContext {
  rounds: number;
  heads: number;
  blobBytes: number;
  cpus: number;
}

export function formatReport(f: Figures, ctx: ReportContext): string {
  const out: string[] = [];
  const pct = (x: number): string => `${Math.round(x * 100)}%`;

  out.push(`GET ${mib(ctx.blobBytes)} blob: ${ctx.rounds} interleaved rounds, curl -> server on loopback, one connection each (MiB/s)`);
  out.push(
    table(
      ['server', 'median', 'min', 'max', 'ratio to nginx', 'same-round ratios', 'CPU (cores)'],
      f.throughput.map((t) => [
        t.server,
        t.mibPerSecond.median.toFixed(0),
        t.mibPerSecond.min.toFixed(0),
        t.mibPerSecond.max.toFixed(0),
        t.ratioToNginx.toFixed(2),
        t.server === SERVERS.nginx ? '' : `${t.roundRatios.min.toFixed(2)}-${t.roundRatios.max.toFixed(2)}`,
        Object.values(t.cores)
          .reduce((a, b) => a + b, 0)
          .toFixed(2),
      ]),
    ),
  );
  out.push('');
  out.push('where the servers\' CPU went during a transfer (cores, median; Node threads by name)');
  const rows: string[][] = [];
  for (const t of f.throughput) {
    for (const [i, [label, total]] of Object.entries(t.cores).entries()) {
      const threads = t.threadCores[label];
      const known = THREAD_COLUMNS.map((n) => threads?.[n]);
      const other = threads === undefined ? undefined : Object.entries(threads).reduce((sum, [n, c]) => sum + (THREAD_COLUMNS.includes(n) ? 0 : c), 0);
      rows.push([i === 0 ? `${t.server}: ${label}` : `  + ${label}`, total.toFixed(2), ...[...known, other].map((c) => (c === undefined ? '' : c.toFixed(2)))]);
    }
  }
  out.push(table(['process', 'total', 'main', 'GC/compiler (V8Worker)', 'hash (WorkerThread)', 'fs (libuv-worker)', 'other'], rows));
  out.push('');
  out.push(`machine during the timed transfers (median): ${pct(f.system.busy)} of ${ctx.cpus} cores busy, ${pct(f.system.steal)} stolen by the hypervisor`);
  out.push('');
  out.push(`HEAD manifest by tag: ${ctx.heads} sequential requests per target on one keep-alive connection, Node http client (ms)`);
  out.push(
    table(
      ['target', 'p50', 'p99', 'max', 'reused conn.'],
      f.heads.map((h) => [h.target, h.p50.toFixed(3), h.p99.toFixed(3), h.max.toFixed(2), String(h.reusedConnections)]),
    ),
  );
  out.push('');
  out.push('Mirror memory (VmHWM: peak resident; VmRSS: resident at the end). Mirrors with a runtime setting serve only the GETs.');
  out.push(
    table(
      ['mirror', 'peak idle', 'peak after GET', 'peak after HEAD', 'RSS at end'],
      Object.entries(f.memory).map(([name, m]) => [name, mib(m.hwmIdle), mib(m.hwmAfterGet), mib(m.hwmAfterHead), mib(m.rssEnd)]),
    ),
  );
  out.push('');
  out.push('where it is at the end (MiB): cgroup peak = what a container limit counts (mirror in a cgroup only);');
  out.push('anon = the process\'s own resident memory, file = mapped files (the node binary, shared);');
  out.push('V8 young generation (new) and old space committed (old space used, garbage included, in brackets), external = Buffer bytes outside the heap');
  const filesRef = f.throughput.find((t) => t.server === SERVERS.files);
  out.push(
    table(
      ['mirror', 'peak', 'cgroup peak', 'RSS', 'anon', 'file', 'new', 'old (used)', 'external', 'GET / files as shipped', 'CPU (cores)'],
      Object.entries(f.memoryEnd).map(([name, m]) => {
        const t = f.throughput.find((x) => x.server === name);
        const cores = t === undefined ? undefined : Object.values(t.cores).reduce((a, b) => a + b, 0);
        return [
          name,
          mibNumber(Math.max(f.memory[name]?.hwmAfterHead ?? 0, m.hwm ?? 0)),
          mibNumber(m.cgroupPeak),
          mibNumber(m.rss),
          mibNumber(m.rssAnon),
          mibNumber(m.rssFile),
          mibNumber(m.heapNew),
          `${mibNumber(m.heapOld)} (${mibNumber(m.heapOldUsed)})`,
          mibNumber(m.external),
          t === undefined || filesRef === undefined || name === SERVERS.grpc ? '' : (t.mibPerSecond.median / filesRef.mibPerSecond.median).toFixed(2),
          cores === undefined ? '' : cores.toFixed(2),
        ];
      }),
    ),
  );
  return out.join('\n');
}

/** The checks of every part, then the wrong responses if any: the end of the report. */
export function formatChecks(checks: Check[], problems: string[], jsonPath: string): string {
  const out: string[] = [];
  out.push('Targets');
  out.push(table(['check', 'measured', 'target', 'result'], checks.map((c) => [c.what, c.value, c.target, c.pass ? 'PASS' : 'MISS'])));
  out.push('');
  if (problems.length > 0) {
    out.push(`INVALID RUN: ${problems.length} wrong response(s):`);
    for (const p of problems.slice(0, 20)) out.push(`  ${p}`);
  }
  out.push(`raw samples: ${jsonPath}`);
  return out.join('\n');
}
