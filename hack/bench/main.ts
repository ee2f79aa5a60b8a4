/**
 * `npm run bench`: the mirror against references measured side by side in
 * one run on this machine. Speed is only ever a ratio to a reference from the
 * same run: these machines are shared and noisy, absolute figures mean little.
 *
 * Part 1 (`local`), one node: GET throughput of a large blob (mirror reading
 * containerd's files, mirror reading through Content.Read, nginx sendfile on
 * the same file), latency of HEAD manifest by tag, the mirrors' RSS.
 * Part 2 (`peers`), six peered nodes: DHT lookup latency for hits and misses,
 * three nodes pulling a large image from the one peer that has it against the
 * same pulling it from the registry, and memory with thousands of advertised
 * digests. Both parts also run mirrors with runtime settings (runtime-settings.ts)
 * beside mirrors as shipped, to show what drives their memory.
 *
 * Selection: `--only local|peers` or BENCH_ONLY=local|peers (default: both).
 * Env, part 1: BENCH_ROUNDS (GET rounds, default 7), BENCH_HEADS (HEAD requests
 * per target, default 2000), BENCH_BLOB_MIB (default 1024). Part 2:
 * BENCH_DIGESTS (advertised tiny layers, default 5000), BENCH_LOOKUPS (HEADs per
 * lookup series, default 400), BENCH_PULL_ROUNDS (default 3), BENCH_IMAGE_MIB
 * (4 layers, default 200), BENCH_HOLDER_AGAIN=1 (at the end, the holder restarts
 * with the recommended runtime setting and advertises everything again: its
 * memory beside the as-shipped run's; about two minutes more). Part 3:
 * BENCH_UPSTREAM_ROUNDS (default 3), BENCH_UPSTREAM_MBIT (default 400),
 * BENCH_UPSTREAM_IMAGE_MIB (4 layers, default 200). All: BENCH_BUDGET_S (stop after, default 1800),
 * BENCH_OUT (JSON path, default .run/bench-<time>.json), BENCH_KEEP=1 (keep the
 * run directories).
 *
 * Exit status: 0 when the bench ran and every response was right, whether or
 * not the targets were met; 1 when it could not run or a response was wrong.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { run } from '../harness/procs.ts';
import { defaultRunRoot } from '../harness/runs.ts';
import { removeLeftoverCgroups } from './cgroup.ts';
import { runLocal, type LocalRun } from './local.ts';
import { computePeersFigures, formatPeersReport, PEER_TARGETS, type PeersFigures } from './peers-report.ts';
import { runPeers, type PeersRun } from './peers.ts';
import { runUpstream, type UpstreamRun } from './upstream.ts';
import { computeUpstreamFigures, formatUpstreamReport, UPSTREAM_TARGETS, type UpstreamFigures } from './upstream-report.ts';
import { clockTicks } from './procstat.ts';
import { computeFigures, formatChecks, formatReport, TARGETS, type Figures } from './report.ts';
import { GET_SETTINGS, RECEIVER_SETTINGS } from './runtime-settings.ts';

/** A setting the bench was given wrong: its message is the whole story. */
class UsageError extends Error {}

function intFromEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${name}=${raw}: want a whole number from ${min} to ${max}`);
  return n;
}

const PARTS = ['local', 'peers', 'upstream'] as const;
type Part = (typeof PARTS)[number];

function selectedParts(argv: string[]): Part[] {
  const i = argv.indexOf('--only');
  const raw = i >= 0 ? argv[i + 1] : process.env['BENCH_ONLY'];
  if (raw === undefined || raw === '' || raw === 'all') return [...PARTS];
  const parts = raw.split(',').map((p) => p.trim());
  const unknown = parts.filter((p) => !(PARTS as readonly string[]).includes(p));
  if (unknown.length > 0) throw new UsageError(`--only/BENCH_ONLY: unknown part(s) ${unknown.join(', ')}; want ${PARTS.join(', ')} or all`);
  return parts as Part[];
}

const MiB = 2 ** 20;

function readConfig() {
  const parts = selectedParts(process.argv.slice(2));
  const digests = intFromEnv('BENCH_DIGESTS', 5000, 100, 50_000);
  const lookups = intFromEnv('BENCH_LOOKUPS', 400, 50, 10_000);
  const lookupWarmup = 25;
  // Three series (the holder's own, two askers') each ask for digests of their own.
  if (parts.includes('peers') && digests < 3 * (lookups + lookupWarmup)) throw new UsageError(`BENCH_DIGESTS=${digests} is too few for BENCH_LOOKUPS=${lookups}: want at least ${3 * (lookups + lookupWarmup)}`);
  return {
    parts,
    local: {
      rounds: intFromEnv('BENCH_ROUNDS', 7, 1, 50),
      heads: intFromEnv('BENCH_HEADS', 2000, 100, 100_000),
      headWarmup: 100,
      headBatch: 100,
      blobBytes: intFromEnv('BENCH_BLOB_MIB', 1024, 16, 4096) * MiB,
      seed: 'shoal-bench',
    },
    peers: {
      digests,
      imageLayers: 4,
      imageLayerBytes: (intFromEnv('BENCH_IMAGE_MIB', 200, 4, 2000) * MiB) / 4,
      lookups,
      lookupWarmup,
      lookupBatch: 25,
      pullRounds: intFromEnv('BENCH_PULL_ROUNDS', 3, 1, 20),
      settleTimeoutSeconds: 600,
      holderAgain: process.env['BENCH_HOLDER_AGAIN'] === '1',
    },
    upstream: {
      nodes: 4,
      imageLayers: 4,
      imageLayerBytes: (intFromEnv('BENCH_UPSTREAM_IMAGE_MIB', 200, 4, 2000) * MiB) / 4,
      rateMbit: intFromEnv('BENCH_UPSTREAM_MBIT', 400, 10, 10_000),
      rounds: intFromEnv('BENCH_UPSTREAM_ROUNDS', 3, 1, 20),
    },
    budgetSeconds: intFromEnv('BENCH_BUDGET_S', 1800, 60, 7200),
    settings: { get: GET_SETTINGS, receivers: RECEIVER_SETTINGS },
  };
}

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

async function main(): Promise<number> {
  const config = readConfig();
  const parts = config.parts;
  const started = Date.now();
  const interrupt = new AbortController();
  const onSignal = (sig: string): void => interrupt.abort(new Error(`interrupted (${sig})`));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const signal = AbortSignal.any([interrupt.signal, AbortSignal.timeout(config.budgetSeconds * 1000)]);
  const log = (line: string): void => console.log(line);

  removeLeftoverCgroups();
  const hz = await clockTicks();
  const env = await environment();
  console.log(`Shoal bench: ${parts.join(' + ')}`);
  console.log(`${String(env['cpus'])} cores (${String(env['cpuModel'])}), load ${loadavg().map((l) => l.toFixed(2)).join(' ')}, node ${process.version}, ${String(env['nginx'])}`);

  let local: LocalRun | undefined;
  let peers: PeersRun | undefined;
  if (parts.includes('local')) {
    const c = config.local;
    console.log(`\n== part 1, one node: ${c.rounds} GET rounds of ${c.blobBytes / MiB} MiB, ${c.heads} HEADs per target\nsetup:`);
    local = await runLocal({ config: c, clockHz: hz, signal, keepRunDir, log });
  }
  if (parts.includes('peers') && !signal.aborted) {
    const c = config.peers;
    console.log(`\n== part 2, peer network: ${c.digests} advertised digests, ${c.lookups} HEADs per lookup series, ${c.pullRounds} pull rounds\nsetup:`);
    peers = await runPeers({ config: c, clockHz: hz, signal, keepRunDir, log });
  }
  let upstream: UpstreamRun | undefined;
  if (parts.includes('upstream') && !signal.aborted) {
    const c = config.upstream;
    console.log(`\n== part 3, upstream fallback: ${c.nodes} nodes, upstream at ${c.rateMbit} Mbit/s, ${c.rounds} rounds\nsetup:`);
    upstream = await runUpstream({ config: c, clockHz: hz, signal, keepRunDir, log });
  }

  // Figures only from a complete part: the JSON keeps whatever samples a failed one got.
  const localFigures: Figures | undefined =
    local !== undefined && local.error === undefined ? computeFigures(local.transfers, local.heads, local.memory, local.memoryEnd) : undefined;
  const peersFigures: PeersFigures | undefined = peers !== undefined && peers.error === undefined ? computePeersFigures(peers) : undefined;
  const upstreamFigures: UpstreamFigures | undefined = upstream !== undefined && upstream.error === undefined ? computeUpstreamFigures(upstream) : undefined;
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(
    jsonPath,
    JSON.stringify(
      {
        command: 'npm run bench',
        startedAt: new Date(started).toISOString(),
        seconds: (Date.now() - started) / 1000,
        config,
        targets: { local: TARGETS, peers: PEER_TARGETS, upstream: UPSTREAM_TARGETS },
        environment: { ...env, loadavgAfter: loadavg() },
        local: local === undefined ? undefined : { figures: localFigures, ...local },
        peers: peers === undefined ? undefined : { figures: peersFigures, ...peers },
        upstream: upstream === undefined ? undefined : { figures: upstreamFigures, ...upstream },
      },
      null,
      1,
    ) + '\n',
  );

  console.log('');
  if (localFigures) {
    console.log(`PART 1: one node\n`);
    console.log(formatReport(localFigures, { rounds: config.local.rounds, heads: config.local.heads, blobBytes: config.local.blobBytes, cpus: cpus().length }));
    console.log('');
  }
  if (peersFigures && peers) {
    console.log(formatPeersReport(peersFigures, peers, { digests: config.peers.digests, lookups: config.peers.lookups, pullRounds: config.peers.pullRounds }));
    console.log('');
  }
  if (upstreamFigures && upstream) {
    console.log(formatUpstreamReport(upstreamFigures, upstream));
    console.log('');
  }
  const checks = [...(localFigures?.checks ?? []), ...(peersFigures?.checks ?? []), ...(upstreamFigures?.checks ?? [])];
  const problems = [...(localFigures?.problems ?? []), ...(peersFigures?.problems ?? []), ...(upstreamFigures?.problems ?? [])];
  console.log(formatChecks(checks, problems, jsonPath));
  console.log(`took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  const failures: string[] = [];
  for (const [name, part] of [['part 1', local], ['part 2', peers], ['part 3', upstream]] as const) {
    if (part?.error !== undefined) failures.push(`${name} could not complete: ${part.error}`);
    if (part?.teardownError !== undefined) failures.push(`${name}: teardown left something behind: ${part.teardownError}`);
  }
  if (parts.includes('peers') && peers === undefined) failures.push('part 2 did not start: the time budget was spent');
  if (parts.includes('upstream') && upstream === undefined) failures.push('part 3 did not start: the time budget was spent');
  for (const f of failures) console.error(`\nbench: ${f}`);
  return failures.length === 0 && problems.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) console.error(`bench: ${err.message}`);
    else console.error(`bench failed: ${(err as Error).stack ?? String(err)}`);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
