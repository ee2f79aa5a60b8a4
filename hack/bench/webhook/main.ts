/**
 * The webhook bench (issue 4, "Speed"): the real webhook process against a
 * no-op AdmissionReview echo server over the same HTTPS, side by side in one
 * run, since on a shared, noisy machine only the ratio to a reference measured
 * alongside means much. Three scenarios, each in rounds with the echo server:
 * cache hits (the same two-container pod again and again), resolution through
 * peers (tags only the nodes' mirrors hold, the registry stopped), and
 * resolution by the registry on loopback (a webhook without peers). The
 * misses come from pools of tags on webhooks with a 1 ms cache TTL (fixture.ts
 * says why). Every answer is checked: allowed, the same uid and, from the
 * webhook, a patch pinning both images to the expected digests, resolved by
 * the expected source (cache, peer, upstream).
 *
 * `node hack/bench/webhook/main.ts`. Env: BENCH_WEBHOOK_ROUNDS (default 3),
 * BENCH_WEBHOOK_HIT_LATENCY (cache-hit reviews per round and server on one
 * connection, default 600), BENCH_WEBHOOK_HIT_LOAD (over the load connections,
 * default 2500), BENCH_WEBHOOK_MISS_LATENCY and BENCH_WEBHOOK_MISS_LOAD (the same
 * for the peers and upstream scenarios, default 100 and 200),
 * BENCH_WEBHOOK_CONNECTIONS (load connections, default 8),
 * BENCH_WEBHOOK_TAG_PAIRS (pairs of tags in each pool, default 100),
 * BENCH_WEBHOOK_OUT (JSON path, default .run/bench-webhook-<time>.json),
 * BENCH_KEEP=1 (keep the run directory; it is kept anyway when the bench fails).
 *
 * Exit status: 0 when the bench ran and every answer was right, whether or not
 * the targets were met; 1 when it could not run or an answer was wrong (an
 * image left unpinned included: the webhook's answer when resolving failed).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { defaultRunRoot } from '../../harness/runs.ts';
import { startFixture, type Fixture } from './fixture.ts';
import { clockTicks } from './procstat.ts';
import { checkTargets, computeFigures, formatReport, formatTargets } from './report.ts';
import { runScenario, SCENARIO_TITLES, warmUp, type LookupFigures, type PhaseRecord, type RunConfig, type ScenarioKey } from './scenarios.ts';

function intFromEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name}=${raw}: want a whole number from ${min} to ${max}`);
  return n;
}

const config: RunConfig = {
  rounds: intFromEnv('BENCH_WEBHOOK_ROUNDS', 3, 1, 20),
  hitLatency: intFromEnv('BENCH_WEBHOOK_HIT_LATENCY', 600, 10, 100_000),
  hitLoad: intFromEnv('BENCH_WEBHOOK_HIT_LOAD', 2500, 10, 100_000),
  missLatency: intFromEnv('BENCH_WEBHOOK_MISS_LATENCY', 100, 10, 5000),
  missLoad: intFromEnv('BENCH_WEBHOOK_MISS_LOAD', 200, 10, 5000),
  connections: intFromEnv('BENCH_WEBHOOK_CONNECTIONS', 8, 1, 64),
  warmup: 500,
};
// A pair comes back after the whole pool: more pairs than connections, so never among the reviews in flight together.
const tagPairs = intFromEnv('BENCH_WEBHOOK_TAG_PAIRS', 100, 2 * config.connections, 2000);
const keep = process.env['BENCH_KEEP'] === '1';
const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
const outPath = resolve(process.env['BENCH_WEBHOOK_OUT'] ?? join(defaultRunRoot(), `bench-webhook-${stamp}.json`));
const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);

async function main(): Promise<number> {
  const started = Date.now();
  const loadavgAtStart = loadavg();
  const hz = await clockTicks();
  log(`webhook bench: ${config.rounds} rounds; cache hits ${config.hitLatency} + ${config.hitLoad}, misses ${config.missLatency} + ${config.missLoad} reviews per round and server (pools of ${tagPairs} tag pairs); ${config.connections} load connections`);
  const fixture = await startFixture({ tagPairs, log });
  const records: PhaseRecord[] = [];
  const lookups: Partial<Record<ScenarioKey, LookupFigures>> = {};
  const wrong: string[] = [];
  let failure: Error | undefined;
  try {
    wrong.push(...(await warmUp(fixture, config)));
    for (const scenario of Object.keys(SCENARIO_TITLES) as ScenarioKey[]) {
      const t0 = Date.now();
      const run = await withScenario(fixture, scenario, () => runScenario(fixture, scenario, config, hz));
      records.push(...run.records);
      if (run.lookups !== undefined) lookups[scenario] = run.lookups;
      log(`${SCENARIO_TITLES[scenario]}: done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
  } catch (err) {
    failure = err as Error;
  }

  wrong.push(...records.flatMap((r) => r.wrong.map((w) => `${SCENARIO_TITLES[r.scenario]}, round ${r.round + 1}, ${r.process} ${r.phase}: ${w}`)));
  if (failure === undefined && wrong.length > 0) failure = new Error(`${wrong.length} wrong answer(s)`);
  const figures = computeFigures(records);
  const targets = checkTargets(figures);
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(
    outPath,
    JSON.stringify({
      startedAt: new Date(started).toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, kernel: release(), loadavgAtStart, loadavgAtEnd: loadavg(), node: process.version },
      config: { ...config, tagPairs },
      failure: failure?.message,
      wrongAnswers: wrong,
      figures,
      lookups,
      targets: targets.map((t) => ({ what: t.target.what, limit: t.target.limit, kind: t.target.kind, value: t.value, met: t.met })),
      phases: records,
    }),
  );
  console.log('');
  if (records.length > 0) {
    console.log(formatReport(figures, config.connections, lookups));
    console.log('');
    console.log(formatTargets(targets));
  }
  try {
    await fixture.stop(failure === undefined && !keep);
  } catch (err) {
    failure ??= new Error(`teardown: ${(err as Error).message}`);
  }
  const loads = (l: number[]) => l.map((n) => n.toFixed(2)).join(' ');
  console.log(`\nmachine: ${cpus().length} cores, load average ${loads(loadavgAtStart)} at the start, ${loads(loadavg())} at the end; ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
  console.log(`raw samples: ${outPath}`);
  if (failure !== undefined) {
    const shown = wrong.slice(0, 5).map((w) => `  ${w.length > 400 ? `${w.slice(0, 397)}...` : w}`);
    console.error(`\nbench FAILED: ${failure.message}${shown.length > 0 ? `; the first:\n${shown.join('\n')}` : ''}\nrun directory kept: ${fixture.runDir}`);
    return 1;
  }
  return 0;
}

/** The peers scenario runs with the registry stopped: an answer can only have come from a node. */
async function withScenario<T>(fixture: Fixture, scenario: ScenarioKey, work: () => Promise<T>): Promise<T> {
  if (scenario !== 'peers') return work();
  await fixture.cluster.registry.stop();
  try {
    return await work();
  } finally {
    await fixture.cluster.registry.start();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`bench could not run: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  },
);
