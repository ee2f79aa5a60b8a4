/**
 * Part 2, the peer network: memory with thousands of advertised digests
 * (the holder and three pullers as shipped; one node per runtime setting),
 * DHT lookups for hits and misses, and three nodes pulling a large image from
 * the one node that has it against the same three pulling it straight from
 * the registry.
 *
 * Order: the provides of the digests saturate the machine for a minute or
 * more, so every timed series runs after they settled. Lookups are asked by a
 * puller, which holds every record itself as each node of a cluster smaller
 * than the DHT's replication (20) does, and by a setting node restarted as
 * shipped, its record store emptied: its records come back from its peers'
 * answers (shared/p2p/record-sync.ts), which the bench waits for and times.
 * The lookup table says, per asker, how many lookups asked the network.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { readMetric } from '../harness/http.ts';
import { waitUntil } from '../harness/procs.ts';
import { measureLookups, type LookupResult } from './lookups.ts';
import { readMemory, type MemorySnapshot } from './memory.ts';
import { startPeersFixture, type PeersFixture } from './peers-fixture.ts';
import { measurePulls, type PullRound } from './pulls.ts';
import { AS_SHIPPED, NO_SETTINGS } from './runtime-settings.ts';
import { tearDown, type PartInit } from './local.ts';

export interface PeersConfig {
  /** Tiny layers the holder advertises. */
  digests: number;
  imageLayers: number;
  imageLayerBytes: number;
  /** Timed HEADs per lookup series. */
  lookups: number;
  lookupWarmup: number;
  lookupBatch: number;
  pullRounds: number;
  /** Longest wait for the provides to settle. */
  settleTimeoutSeconds: number;
  /** At the end, restart the holder as shipped, then with no settings, each time letting it advertise everything again (minutes more). */
  holderAgain: boolean;
}

export interface NodeMemory {
  node: string;
  role: string;
  /** The runtime setting its mirror ran with when read. */
  setting: string;
  memory: MemorySnapshot;
}

export interface SettleSample {
  /** Seconds since the import finished. */
  t: number;
  advertised: number;
  queue: number;
  /** VmRSS of each node's mirror, by node. */
  rss: Record<string, number | undefined>;
}

export interface PeersRun {
  nodes: { name: string; ip: string; setting: string }[];
  many: { ref: string; digest: string; keys: number } | undefined;
  image: { ref: string; digest: string; size: number; layers: number } | undefined;
  /** From the end of the setup (import and pull done) until the holder's provide queue stayed empty; undefined if it never did. */
  settleSeconds: number | undefined;
  settleSamples: SettleSample[];
  /** Every mirror once the provides settled. */
  memorySettled: NodeMemory[];
  /** Every mirror at the end (the holder has served the pulls). */
  memoryEnd: NodeMemory[];
  lookups: LookupResult | undefined;
  /** Which nodes asked, and how they hold the records. */
  askers: { name: string; how: string }[];
  /** Seconds from the restarted asker's mirror start until it held every record (shoal_dht_records_complete). */
  restartedRecordsSeconds?: number;
  pulls: PullRound[];
  pullers: string[];
  /** config.holderAgain: the holder restarted as shipped, then with no settings, each once its provides settled again. */
  holderAgain: { settleSeconds: number; samples: SettleSample[]; memory: NodeMemory }[];
  runDir: string | undefined;
  error?: string;
  teardownError?: string;
}

export type PeersInit = PartInit<PeersConfig>;

export async function runPeers(init: PeersInit): Promise<PeersRun> {
  const { config, signal, log } = init;
  const result: PeersRun = {
    nodes: [],
    many: undefined,
    image: undefined,
    settleSeconds: undefined,
    settleSamples: [],
    memorySettled: [],
    memoryEnd: [],
    lookups: undefined,
    askers: [],
    pulls: [],
    pullers: [],
    holderAgain: [],
    runDir: undefined,
  };
  let fixture: PeersFixture | undefined;
  try {
    fixture = await startPeersFixture({ digests: config.digests, imageLayers: config.imageLayers, imageLayerBytes: config.imageLayerBytes, log });
    const f = fixture;
    const { holder, pullers, settingNodes, many, image } = f;
    const nodes = f.cluster.nodes;
    result.runDir = f.cluster.runDir;
    result.many = { ref: many.ref, digest: many.layout.digest, keys: many.keys };
    const wantKeys = many.keys + image.manifests[0]!.layers.length + 3;
    result.image = { ref: image.ref, digest: image.digest, size: image.manifests[0]!.layers.reduce((s, l) => s + l.size, 0), layers: image.manifests[0]!.layers.length };
    const settingOf = new Map(nodes.map((n) => [n.name, AS_SHIPPED.name]));
    for (const s of settingNodes) settingOf.set(s.node.name, s.setting.name);
    result.nodes = nodes.map((n) => ({ name: n.name, ip: n.ip, setting: settingOf.get(n.name)! }));
    result.pullers = pullers.map((n) => n.name);
    const remoteAsker = settingNodes[0]?.node;
    if (remoteAsker === undefined || pullers.length < 3) throw new Error('part 2 needs a holder, three pullers and a setting node');
    const roleOf = (name: string, phase: 'settled' | 'end'): string => {
      if (name === holder.name) return `holder: ${wantKeys} keys advertised`;
      if (phase === 'end' && name === pullers[0]!.name) return 'asked, pulled';
      if (phase === 'end' && result.pullers.includes(name)) return 'pulled';
      if (result.pullers.includes(name)) return 'puller, stores the records';
      if (phase === 'end' && name === remoteAsker.name) return 'restarted, asked';
      return 'stores the records';
    };
    const readAll = async (phase: 'settled' | 'end'): Promise<NodeMemory[]> =>
      Promise.all(
        nodes.map(async (n) => ({
          node: n.name,
          role: roleOf(n.name, phase),
          setting: settingOf.get(n.name)!,
          memory: await readMemory(f.mirrorPid(n), n.mirror!.metricsUrl, init.clockHz),
        })),
      );

    const settled = await waitForProvides({ fixture: f, wantKeys, timeoutSeconds: config.settleTimeoutSeconds, clockHz: init.clockHz, signal, log });
    result.settleSeconds = settled.seconds;
    result.settleSamples = settled.samples;
    result.memorySettled = await readAll('settled');

    log(`restarting ${remoteAsker.name} as shipped (its record store empty)`);
    const restarted = Date.now();
    await f.restartMirror(remoteAsker, AS_SHIPPED);
    settingOf.set(remoteAsker.name, AS_SHIPPED.name);
    await waitUntil(async () => (await readMetric(remoteAsker.mirror!.metricsUrl, 'shoal_dht_records_complete')) === 1, {
      what: `${remoteAsker.name} holding every record again`,
      timeoutMs: 60_000,
      intervalMs: 50,
    });
    result.restartedRecordsSeconds = (Date.now() - restarted) / 1000;
    log(`  ${remoteAsker.name} held every record ${result.restartedRecordsSeconds.toFixed(1)} s after its restart began`);

    const askers = [
      { node: pullers[0]!, how: 'holds the records itself' },
      { node: remoteAsker, how: 'restarted: records from peers\' answers' },
    ];
    result.askers = askers.map((a) => ({ name: a.node.name, how: a.how }));
    log(`lookups: ${config.lookupWarmup} warm-up then ${config.lookups} timed HEADs per series, each for a digest of its own`);
    result.lookups = await measureLookups({
      askers: askers.map((a) => ({ name: a.node.name, mirrorUrl: a.node.mirror!.url, metricsUrl: a.node.mirror!.metricsUrl })),
      holder: { name: holder.name, mirrorUrl: holder.mirror!.url, metricsUrl: holder.mirror!.metricsUrl },
      repo: many.repo,
      digests: many.layerDigests,
      sizes: many.sizes,
      count: config.lookups,
      warmup: config.lookupWarmup,
      batch: config.lookupBatch,
      signal,
    });

    log(`pulls: ${config.pullRounds} rounds; ${result.pullers.join(', ')} pull ${image.ref} at once, from peers (upstream stopped) and straight from the registry`);
    await measurePulls({
      image,
      holder,
      pullers,
      nodes,
      registry: f.cluster.registry,
      mirrorPid: (n) => f.mirrorPid(n),
      clockHz: init.clockHz,
      rounds: config.pullRounds,
      dir: f.cluster.runDir,
      signal,
      onRound: (r) => {
        result.pulls.push(r);
        const each = r.pulls.map((p) => `${p.node} ${p.problem ?? `${p.seconds.toFixed(1)} s`}`).join(', ');
        log(`  round ${r.round}, ${r.source}: ${r.wallSeconds.toFixed(1)} s (${each})`);
      },
    });
    result.memoryEnd = await readAll('end');

    // The same restart as shipped first: a restarted holder only re-provides, so it is compared with a restarted holder.
    for (const setting of config.holderAgain ? [AS_SHIPPED, NO_SETTINGS] : []) {
      log(`${holder.name}'s mirror restarts with the setting "${setting.name}" and advertises everything again`);
      await f.restartMirror(holder, setting);
      const again = await waitForProvides({ fixture: f, wantKeys, timeoutSeconds: config.settleTimeoutSeconds, clockHz: init.clockHz, signal, log });
      const memory = await readMemory(f.mirrorPid(holder), holder.mirror!.metricsUrl, init.clockHz);
      result.holderAgain.push({ settleSeconds: again.seconds, samples: again.samples, memory: { node: holder.name, role: 'holder, restarted, advertising again', setting: setting.name, memory } });
    }
  } catch (err) {
    result.error = (err as Error).stack ?? String(err);
  } finally {
    const f = fixture;
    result.teardownError = await tearDown(init, f && { stop: () => f.stop(), runDir: f.cluster.runDir });
  }
  return result;
}

interface ProvidesInit {
  fixture: PeersFixture;
  /** Keys the holder advertises once it has seen everything. */
  wantKeys: number;
  timeoutSeconds: number;
  clockHz: number;
  signal: AbortSignal;
  log: (line: string) => void;
}

/** Until the holder advertises every key and its provide queue stays empty; samples every mirror's RSS meanwhile. */
async function waitForProvides(init: ProvidesInit): Promise<{ seconds: number; samples: SettleSample[] }> {
  const { fixture: f, wantKeys, log } = init;
  const metrics = f.holder.mirror!.metricsUrl;
  const nodes = f.cluster.nodes;
  const pids = new Map(nodes.map((n) => [n.name, f.mirrorPid(n)]));
  log(`provides: waiting for ${f.holder.name} to advertise ${wantKeys} keys and its provide queue to drain (at most ${init.timeoutSeconds} s)`);
  const samples: SettleSample[] = [];
  const began = performance.now();
  let quiet = 0;
  let lastLog = 0;
  for (;;) {
    init.signal.throwIfAborted();
    const t = (performance.now() - began) / 1000;
    const [advertised, queue] = await Promise.all([readMetric(metrics, 'shoal_advertised_keys'), readMetric(metrics, 'shoal_dht_provide_queue')]);
    const rss = await Promise.all(nodes.map(async (n) => [n.name, (await readMemory(pids.get(n.name)!, undefined, init.clockHz)).rss] as const));
    samples.push({ t, advertised, queue, rss: Object.fromEntries(rss) });
    quiet = advertised >= wantKeys && queue === 0 ? quiet + 1 : 0;
    if (t - lastLog >= 15) {
      lastLog = t;
      log(`  ${t.toFixed(0)} s: ${advertised} advertised, ${queue} queued; mirrors' RSS ${rss.map(([, r]) => ((r ?? 0) / 2 ** 20).toFixed(0)).join(' ')} MiB`);
    }
    // Three empty readings a second apart: the last provides in flight have ended too.
    if (quiet >= 3) {
      log(`  settled after ${t.toFixed(0)} s`);
      return { seconds: t, samples };
    }
    if (t > init.timeoutSeconds) throw new Error(`the provides did not settle in ${init.timeoutSeconds} s (${advertised} advertised, ${queue} queued)`);
    await sleep(1000);
  }
}
