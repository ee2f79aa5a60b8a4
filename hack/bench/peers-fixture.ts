/**
 * What part 2 measures, built from the harness: a peered cluster (containerd
 * + mirror each, one DHT) of a holder, three pullers and one node per runtime
 * setting under test. The holder holds thousands of tiny layers (one imported
 * image) and a large image pulled from upstream; the others hold nothing. The
 * holder and the pullers run as shipped: the holder's memory with the digests
 * advertised is the figure, and the pulls compare shipped mirrors.
 * Every node stores the holder's records (the DHT replicates each to its 20
 * closest nodes: here, all), so the pullers and the setting nodes bear the
 * same load, and the pullers are three samples of the as-shipped figure.
 */
import { join } from 'node:path';
import { startCluster, type Cluster, type ClusterNode } from '../harness/cluster.ts';
import { buildAndPush, type PushedImage } from '../harness/images.ts';
import { waitUntil } from '../harness/procs.ts';
import { readMetric } from '../harness/http.ts';
import { createRunDir } from '../harness/runs.ts';
import { createMemoryCgroup, type MemoryCgroup } from './cgroup.ts';
import { buildManyLayers, importManyLayers, type ManyLayersImage } from './many-layers.ts';
import { AS_SHIPPED, RECEIVER_SETTINGS, warmCompileCache, type RuntimeSetting } from './runtime-settings.ts';

export interface PeersFixtureInit {
  /** Tiny layers the holder advertises. */
  digests: number;
  /** The large image: this many layers of this many bytes (incompressible). */
  imageLayers: number;
  imageLayerBytes: number;
  log: (line: string) => void;
}

export interface SettingNode {
  node: ClusterNode;
  setting: RuntimeSetting;
}

export interface PeersFixture {
  readonly cluster: Cluster;
  readonly holder: ClusterNode;
  /** Three nodes as shipped that pull the large image. */
  readonly pullers: ClusterNode[];
  /** One node per runtime setting, with it. */
  readonly settingNodes: SettingNode[];
  readonly many: ManyLayersImage;
  readonly image: PushedImage;
  /** The mirror process of a node now (it changes when the mirror restarts). */
  mirrorPid(node: ClusterNode): number;
  /** Restarts a node's mirror with a runtime setting; waits until it has every other node as a peer. */
  restartMirror(node: ClusterNode, setting: RuntimeSetting): Promise<void>;
  stop(): Promise<void>;
}

const TINY_LAYER_BYTES = 512;

export async function startPeersFixture(init: PeersFixtureInit): Promise<PeersFixture> {
  const step = async <T>(what: string, work: () => Promise<T>): Promise<T> => {
    const started = Date.now();
    const result = await work();
    init.log(`  ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return result;
  };
  const PULLERS = 3;
  const settings = [AS_SHIPPED, ...Array.from({ length: PULLERS }, () => AS_SHIPPED), ...RECEIVER_SETTINGS];
  let cluster: Cluster | undefined;
  const cgroups = new Map<number, MemoryCgroup>();
  const removeCgroups = (): void => {
    for (const cg of cgroups.values()) cg.remove();
  };
  try {
    for (const [index, setting] of settings.entries()) {
      if (setting.memoryLimitBytes !== undefined) cgroups.set(index, createMemoryCgroup(`peers-${index}`, setting.memoryLimitBytes));
    }
    const runDir = await createRunDir();
    warmCompileCache();
    const [started, built] = await Promise.all([
      step(`registry and ${settings.length} peered nodes started`, () =>
        startCluster({
          nodes: settings.length,
          runDir,
          mirrorEnv: ({ index }) => settings[index]!.env,
          mirrorCommandPrefix: ({ index }) => cgroups.get(index)?.commandPrefix,
          mirrorLogLevel: 'info',
          // Part 2 measures the peer network: a miss is the 404 that sends containerd upstream.
          mirrorArgs: ['--upstream-fallback=false'],
        }),
      ),
      step(`image of ${init.digests} tiny layers built`, () => buildManyLayers({ dir: join(runDir, 'img-many'), layers: init.digests, layerBytes: TINY_LAYER_BYTES, tag: 'v1' })),
    ]);
    cluster = started;
    const c = cluster;
    const holder = c.nodes[0]!;
    const [many, image] = await Promise.all([
      step(`${init.digests} layers imported into ${holder.name}'s containerd (ctr images import --no-unpack)`, () =>
        importManyLayers(holder.containerd, built, c.registry.host, 'bench/many'),
      ),
      step(`${(init.imageLayers * init.imageLayerBytes) / 2 ** 20} MiB image of ${init.imageLayers} layers pushed, pulled by ${holder.name}`, async () => {
        const pushed = await buildAndPush({
          dir: join(runDir, 'img-big'),
          layers: Array.from({ length: init.imageLayers }, () => init.imageLayerBytes),
          registry: c.registry.host,
          repo: 'bench/big',
          tag: 'v1',
        });
        await holder.containerd.pull(pushed.ref, { plainHttp: true });
        return pushed;
      }),
    ]);

    const mirrorPid = (node: ClusterNode): number => node.mirror!.pid();
    const restartMirror = async (node: ClusterNode, setting: RuntimeSetting): Promise<void> => {
      const mirror = node.mirror!;
      await mirror.stop();
      await mirror.start(setting.env);
      await waitUntil(async () => (await readMetric(mirror.metricsUrl, 'shoal_peers')) >= c.nodes.length - 1, {
        what: `${node.name}'s mirror back among its ${c.nodes.length - 1} peers`,
        timeoutMs: 30_000,
        intervalMs: 100,
      });
    };
    return {
      cluster: c,
      holder,
      pullers: c.nodes.slice(1, 1 + PULLERS),
      settingNodes: c.nodes.slice(1 + PULLERS).map((node, i) => ({ node, setting: RECEIVER_SETTINGS[i]! })),
      many,
      image,
      mirrorPid,
      restartMirror,
      stop: async () => {
        try {
          await c.stop();
        } finally {
          removeCgroups();
        }
      },
    };
  } catch (err) {
    await cluster?.stop().catch((teardown: unknown) => init.log(`teardown after failed setup: ${String(teardown)}`));
    removeCgroups();
    throw err;
  }
}
