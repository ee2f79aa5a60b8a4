/**
 * `npm run bench`: the mirror against nginx, side by side in one run on this
 * machine. GET throughput of a large blob (mirror reading containerd's files,
 * mirror reading through Content.Read, nginx sendfile on the same file),
 * latency of HEAD manifest by tag, and the mirrors' peak RSS. Speed is only
 * ever a ratio to the reference measured in the same run: these machines are
 * shared and noisy, absolute figures mean little.
 *
 * Env: BENCH_ROUNDS (GET rounds, default 7), BENCH_HEADS (HEAD requests per
 * target, default 2000), BENCH_BLOB_MIB (default 1024), BENCH_BUDGET_S (stop
 * after, default 900), BENCH_OUT (JSON path, default .run/bench-<time>.json),
 * BENCH_KEEP=1 (keep the run directory with its blob).
 *
 * Exit status: 0 when the bench ran and every response was right, whether or
 * not the targets were met; 1 when it could not run or a response was wrong.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { run } from '../harness/procs.ts';
import { defaultRunRoot } from '../harness/runs.ts';
import { startFixture, type Fixture } from './fixture.ts';
import { measureHeads, type HeadSeries } from './head.ts';
import { clockTicks, statusBytes } from './procstat.ts';
import { computeFigures, formatReport, TARGETS, type MemoryReading } from './report.ts';
import { measureThroughput, type Transfer } from './throughput.ts';

function intFromEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name}=${raw}: want a whole number from ${min} to ${max}`);
  return n;
}

const config = {
  rounds: intFromEnv('BENCH_ROUNDS', 7, 1, 50),
  heads: intFromEnv('BENCH_HEADS', 2000, 100, 100_000),
  headWarmup: 100,
  headBatch: 100,
  blobBytes: intFromEnv('BENCH_BLOB_MIB', 1024, 16, 4096) * 2 ** 20,
  budgetSeconds: intFromEnv('BENCH_BUDGET_S', 900, 60, 3600),
  seed: 'shoal-bench',
};
const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
const jsonPath = resolve(process.env['BENCH_OUT'] ?? join(defaultRunRoot(), `bench-${stamp}.json`));
const keepRunDir = process.env['BENCH_KEEP'] === '1';

async function versionLine(command: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run(command, args, { timeoutMs: 10_000 });
    return (stdout.toString() + stderr).trim().split('\n')[0] ?? '';
  } catch (err) {
    return `unknown (${(err as Error).message.split('\n')[0]})`;
  }
}

async function environment(): Promise<Record<string, unknown>> {
  return {
    node: process.version,
    nginx: await versionLine('nginx', ['-v']),
    curl: await versionLine('curl', ['--version']),
    containerd: await versionLine('containerd', ['--version']),
    kernel: release(),
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    loadavgBefore: loadavg(),
  };
}

function memoryOf(pid: number): number | undefined {
  return statusBytes(pid, 'VmHWM');
}

async function main(): Promise<number> {
  const started = Date.now();
  const interrupt = new AbortController();
  const onSignal = (sig: string): void => interrupt.abort(new Error(`interrupted (${sig})`));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const signal = AbortSignal.any([interrupt.signal, AbortSignal.timeout(config.budgetSeconds * 1000)]);

  console.log(`Shoal bench, mirror part 1: ${config.rounds} GET rounds of ${config.blobBytes / 2 ** 20} MiB, ${config.heads} HEADs per target`);
  const hz = await clockTicks();
  const env = await environment();
  console.log(`${String(env['cpus'])} cores (${String(env['cpuModel'])}), load ${loadavg().map((l) => l.toFixed(2)).join(' ')}, node ${process.version}, ${String(env['nginx'])}`);
  console.log('setup:');

  let fixture: Fixture | undefined;
  const transfers: Transfer[] = [];
  let heads: HeadSeries[] = [];
  const memory: Record<string, MemoryReading> = {};
  let error: string | undefined;
  let teardownError: string | undefined;
  try {
    fixture = await startFixture({ blobBytes: config.blobBytes, seed: config.seed, log: (l) => console.log(l) });
    const f = fixture;
    for (const [name, pid] of Object.entries(f.mirrorPids)) {
      memory[name] = { hwmIdle: memoryOf(pid), hwmAfterGet: undefined, hwmAfterHead: undefined, rssEnd: undefined };
    }
    console.log(`GET: warm-up round, then ${config.rounds} timed rounds (MiB/s)`);
    let line: string[] = [];
    // Collected as they come, so an interrupted run still leaves its samples in the JSON.
    await measureThroughput({
      servers: f.servers,
      rounds: config.rounds,
      expectedBytes: config.blobBytes,
      clockHz: hz,
      signal,
      onTransfer: (t) => {
        transfers.push(t);
        line.push(`${t.server} ${t.problem ?? (t.bytesPerSecond / 2 ** 20).toFixed(0)}`);
        if (line.length === f.servers.length) {
          console.log(`  ${t.round === 0 ? 'warm-up' : `round ${t.round}`}: ${line.join(' | ')}`);
          line = [];
        }
      },
    });
    for (const [name, pid] of Object.entries(f.mirrorPids)) memory[name]!.hwmAfterGet = memoryOf(pid);

    console.log(`HEAD: ${config.headWarmup} warm-up then ${config.heads} timed requests per target, in batches of ${config.headBatch}`);
    heads = await measureHeads({ targets: f.headTargets, count: config.heads, warmup: config.headWarmup, batch: config.headBatch, signal });
    for (const [name, pid] of Object.entries(f.mirrorPids)) {
      memory[name]!.hwmAfterHead = memoryOf(pid);
      memory[name]!.rssEnd = statusBytes(pid, 'VmRSS');
    }
  } catch (err) {
    error = (err as Error).stack ?? String(err);
  } finally {
    console.log('teardown');
    try {
      await fixture?.stop();
      if (fixture !== undefined && !keepRunDir) rmSync(fixture.runDir, { recursive: true, force: true });
    } catch (err) {
      teardownError = err instanceof AggregateError ? `${err.message}: ${err.errors.map(String).join('; ')}` : String(err);
    }
  }

  // Figures only from a complete run: the JSON keeps whatever samples a failed one got.
  const figures = error === undefined ? computeFigures(transfers, heads, memory) : undefined;
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(
    jsonPath,
    JSON.stringify(
      {
        command: 'npm run bench',
        startedAt: new Date(started).toISOString(),
        seconds: (Date.now() - started) / 1000,
        config,
        targets: TARGETS,
        environment: { ...env, loadavgAfter: loadavg() },
        blob: fixture ? { digest: fixture.blob.digest, size: fixture.blob.size } : undefined,
        image: fixture ? { ref: fixture.image.ref, digest: fixture.image.digest, size: fixture.image.size } : undefined,
        figures,
        transfers,
        heads,
        runDir: keepRunDir ? fixture?.runDir : undefined,
        error,
        teardownError,
      },
      null,
      1,
    ) + '\n',
  );

  console.log('');
  if (figures) console.log(formatReport(figures, { rounds: config.rounds, heads: config.heads, blobBytes: config.blobBytes, cpus: cpus().length, jsonPath }));
  else console.log(`raw samples: ${jsonPath}`);
  console.log(`took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  if (error !== undefined) console.error(`\nbench could not complete: ${error}`);
  if (teardownError !== undefined) console.error(`\nteardown left something behind: ${teardownError}`);
  const ok = error === undefined && teardownError === undefined && figures !== undefined && figures.problems.length === 0;
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`bench failed: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  },
);
