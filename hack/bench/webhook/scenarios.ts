/**
 * The three scenarios, each measured in rounds side by side with the echo
 * reference: in every round each server gets a latency phase (one
 * connection, one review at a time) and a load phase (several connections),
 * the order of the two servers alternating from round to round so drift in
 * the machine's load falls on both alike.
 */
import { performance } from 'node:perf_hooks';
import { readMetric } from '../../harness/http.ts';
import type { Fixture, PodImages, Server } from './fixture.ts';
import { drive } from './load.ts';
import { cpuTicks, systemTicks } from './procstat.ts';
import { reviewCase, type Pinning, type ReviewCase } from './reviews.ts';

export type ScenarioKey = 'hit' | 'peers' | 'upstream';
export type Phase = 'latency' | 'load';
/** `shoal` is whichever webhook process the scenario measures. */
export type Role = 'echo' | 'shoal';

export const SCENARIO_TITLES: Record<ScenarioKey, string> = {
  hit: 'cache hits',
  peers: 'through peers',
  upstream: 'upstream (loopback)',
};

export interface RunConfig {
  rounds: number;
  /** Reviews per round and server on one connection, cache hits. */
  hitLatency: number;
  /** Reviews per round and server over `connections`, cache hits. */
  hitLoad: number;
  /** The same for the peers and upstream scenarios (each review the pool's next pair of tags). */
  missLatency: number;
  missLoad: number;
  connections: number;
  /** Untimed cache-hit reviews per server before the first scenario (misses: at most 50), so the paths measured are compiled. */
  warmup: number;
}

/** CPU while a phase ran, in cores (1 = one core busy all the time). */
export interface PhaseCpu {
  server: number;
  /** By thread name (MainThread runs the JavaScript). */
  serverThreads: Record<string, number>;
  /** This process: the load client. */
  client: number;
  /** Share of all the machine's cores busy, and stolen by the hypervisor. */
  machineBusy: number;
  machineSteal: number;
}

export interface PhaseRecord {
  scenario: ScenarioKey;
  round: number;
  role: Role;
  /** The process measured: echo, shoal-cache, shoal-peers or shoal-upstream. */
  process: Server['name'];
  phase: Phase;
  connections: number;
  reviews: number;
  wallMs: number;
  reviewsPerS: number;
  newConnections: number;
  cpu: PhaseCpu;
  /** Answers that failed the check, as `uid: what is wrong` (priming included). */
  wrong: string[];
  latenciesMs: number[];
  sentAtMs: number[];
}

/** The webhook's own account of its DHT lookups in a scenario (shoal_resolve_duration_seconds). */
export interface LookupFigures {
  /** Lookups that found a provider, and the mean time to the first. */
  hits: number;
  hitMeanMs: number;
  /** Lookups that found none before the resolve timeout or their end, and the mean time to giving up. */
  misses: number;
  missMeanMs: number;
}

export interface ScenarioRun {
  records: PhaseRecord[];
  /** undefined when the webhook looked nothing up in the DHT. */
  lookups: LookupFigures | undefined;
}

/** What a scenario sends its webhook: the cache-hit pod again and again, or the pool's pairs of tags in turn. */
interface Workload {
  readonly server: Server;
  readonly next: () => ReviewCase;
}

function workload(f: Fixture, scenario: ScenarioKey): Workload {
  if (scenario === 'hit') return { server: f.shoalCache, next: () => reviewCase(f.hit.refs, pinned(f.hit, 'cache')) };
  const [server, pool, by] = scenario === 'peers' ? [f.shoalPeers, f.peerPods, 'peer' as const] : [f.shoalUpstream, f.upstreamPods, 'upstream' as const];
  let turn = 0;
  return {
    server,
    next: () => {
      const pod = pool[turn++ % pool.length]!;
      return reviewCase(pod.refs, pinned(pod, by));
    },
  };
}

const pinned = (pod: PodImages, by: Pinning['by']): Pinning => ({ images: pod.pinned, by });
const several = (count: number, next: () => ReviewCase) => Array.from({ length: count }, () => next());
/** The echo server gets the same pod shape; it pins nothing, so which tags does not matter. */
const echoCase = (f: Fixture) => reviewCase(f.hit.refs, undefined);

/**
 * Untimed reviews to every server, checked like the timed ones, so the code
 * paths measured are compiled: cache hits over the load connections, misses
 * (slower) on one connection. Returns the wrong answers.
 */
export async function warmUp(f: Fixture, config: RunConfig): Promise<string[]> {
  const wrong: string[] = [];
  const echo = await drive(f.echo.target, several(config.warmup, () => echoCase(f)), several(config.connections, () => echoCase(f)));
  wrong.push(...echo.wrong.map((w) => `warm-up of echo: ${w}`));
  for (const scenario of Object.keys(SCENARIO_TITLES) as ScenarioKey[]) {
    const load = workload(f, scenario);
    const primes = several(scenario === 'hit' ? config.connections : 1, load.next);
    const result = await drive(load.server.target, several(scenario === 'hit' ? config.warmup : Math.min(config.warmup, 50), load.next), primes);
    wrong.push(...result.wrong.map((w) => `warm-up of ${load.server.name}: ${w}`));
  }
  return wrong;
}

/**
 * Runs one scenario's rounds. Wrong answers are recorded, not thrown: the
 * figures of a run with some (an image left unpinned under load) still tell
 * what happened, and the caller fails the bench.
 */
export async function runScenario(f: Fixture, scenario: ScenarioKey, config: RunConfig, hz: number): Promise<ScenarioRun> {
  const load = workload(f, scenario);
  const lookupsBefore = await lookupTotals(load.server);

  const records: PhaseRecord[] = [];
  for (let round = 0; round < config.rounds; round++) {
    const order: Role[] = round % 2 === 0 ? ['echo', 'shoal'] : ['shoal', 'echo'];
    for (const phase of ['latency', 'load'] as const) {
      const count = scenario === 'hit' ? (phase === 'latency' ? config.hitLatency : config.hitLoad) : phase === 'latency' ? config.missLatency : config.missLoad;
      const connections = phase === 'latency' ? 1 : config.connections;
      for (const role of order) {
        const server = role === 'echo' ? f.echo : load.server;
        const next = role === 'echo' ? () => echoCase(f) : load.next;
        // Primes first: they take the pool's next pairs, which then come back only a pool later.
        const primes = several(connections, next);
        records.push({ scenario, round, role, process: server.name, phase, ...(await measure(server, several(count, next), primes, hz)) });
      }
    }
  }
  const lookupsAfter = await lookupTotals(load.server);
  const hits = lookupsAfter.hitCount - lookupsBefore.hitCount;
  const misses = lookupsAfter.missCount - lookupsBefore.missCount;
  const lookups =
    hits + misses === 0
      ? undefined
      : {
          hits,
          hitMeanMs: hits === 0 ? NaN : round3(((lookupsAfter.hitSum - lookupsBefore.hitSum) / hits) * 1000),
          misses,
          missMeanMs: misses === 0 ? NaN : round3(((lookupsAfter.missSum - lookupsBefore.missSum) / misses) * 1000),
        };
  return { records, lookups };
}

async function lookupTotals(server: Server) {
  const read = (name: string, outcome: string) => (server.metricsUrl === undefined ? Promise.resolve(0) : readMetric(server.metricsUrl, name, { outcome }));
  const [hitCount, hitSum, missCount, missSum] = await Promise.all([
    read('shoal_resolve_duration_seconds_count', 'hit'),
    read('shoal_resolve_duration_seconds_sum', 'hit'),
    read('shoal_resolve_duration_seconds_count', 'miss'),
    read('shoal_resolve_duration_seconds_sum', 'miss'),
  ]);
  return { hitCount, hitSum, missCount, missSum };
}

async function measure(server: Server, cases: ReviewCase[], primes: ReviewCase[], hz: number): Promise<Omit<PhaseRecord, 'scenario' | 'round' | 'role' | 'process' | 'phase'>> {
  // Readings taken around the whole drive (priming included): a few ms in seconds.
  const serverBefore = cpuTicks(server.pid);
  const clientBefore = process.cpuUsage();
  const systemBefore = systemTicks();
  const t0 = performance.now();
  const result = await drive(server.target, cases, primes);
  const seconds = (performance.now() - t0) / 1000;
  const serverAfter = cpuTicks(server.pid);
  const client = process.cpuUsage(clientBefore);
  const systemAfter = systemTicks();
  const cores = (ticks: number) => round3(ticks / hz / seconds);
  const systemTotal = systemAfter.total - systemBefore.total;
  const cpu: PhaseCpu = {
    server: cores(serverAfter.total - serverBefore.total),
    serverThreads: Object.fromEntries(Object.entries(serverAfter.threads).map(([name, ticks]) => [name, cores(ticks - (serverBefore.threads[name] ?? 0))])),
    client: round3((client.user + client.system) / 1e6 / seconds),
    machineBusy: systemTotal > 0 ? round3(1 - (systemAfter.idle - systemBefore.idle) / systemTotal) : 0,
    machineSteal: systemTotal > 0 ? round3((systemAfter.steal - systemBefore.steal) / systemTotal) : 0,
  };
  return {
    connections: primes.length,
    reviews: cases.length,
    wallMs: round3(result.wallMs),
    reviewsPerS: round3((cases.length / result.wallMs) * 1000),
    newConnections: result.newConnections,
    cpu,
    wrong: result.wrong,
    latenciesMs: result.latenciesMs.map(round3),
    sentAtMs: result.sentAtMs.map(round3),
  };
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
