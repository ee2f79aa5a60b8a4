/**
 * Runtime settings a DaemonSet can give the mirror without touching its code:
 * environment (glibc's malloc tunables, NODE_OPTIONS) and the container's
 * memory limit. The bench runs mirrors with each beside one as shipped (no
 * setting, no limit: a process on this host), under the same load, so their
 * memory can be told apart in one run. Each setting tests one suspect.
 */

export interface RuntimeSetting {
  /** Label in tables and JSON. */
  name: string;
  /** Environment set for the mirror process. */
  env: Record<string, string>;
  /** Run in a memory cgroup with this limit, as a container with `limits.memory`. */
  memoryLimitBytes?: number;
  /** What it tests. */
  suspect: string;
}

/**
 * Node 24's Buffer pool slab is 64 KiB (8 KiB up to Node 22): every small
 * Buffer.allocUnsafe (varints, protobufs: libp2p makes many) is a view of a
 * slab, and one such view kept (a provider record's value in kad-dht's
 * in-memory datastore) keeps the whole slab. Node has no flag for the pool
 * size; a preloaded data: module sets it before the mirror's code runs.
 */
const SMALL_BUFFER_POOL = '--import=data:text/javascript,Buffer.poolSize=8192';

export const AS_SHIPPED: RuntimeSetting = { name: 'as shipped', env: {}, suspect: 'the reference: no setting' };

export const ARENA_MAX_2: RuntimeSetting = {
  name: 'MALLOC_ARENA_MAX=2',
  env: { MALLOC_ARENA_MAX: '2' },
  suspect: 'glibc keeping freed memory in per-thread arenas',
};

export const SEMI_SPACE_8: RuntimeSetting = {
  name: 'semi-space 8 MiB',
  env: { NODE_OPTIONS: '--max-semi-space-size=8' },
  suspect: 'the V8 young generation, which grows to 2 x 64 MiB under a high allocation rate on a large host',
};

/** What the bench suggests shipping: every setting that helped, none that did not. */
export const RECOMMENDED: RuntimeSetting = {
  name: 'recommended (semi 8, old 256, pool 8K)',
  env: { NODE_OPTIONS: `--max-semi-space-size=8 --max-old-space-size=256 ${SMALL_BUFFER_POOL}` },
  suspect: 'all three V8/Node suspects at once: young generation 2 x 8 MiB, old space capped at 256 MiB, 8 KiB Buffer pool',
};

/** manifests/mirror-daemonset.yaml's limits.memory: Node sizes its heap from it (young generation 2 x 1 MiB). */
export const DAEMONSET_LIMIT: RuntimeSetting = {
  name: 'in a 256 MiB cgroup (the DaemonSet limit)',
  env: {},
  memoryLimitBytes: 256 * 2 ** 20,
  suspect: 'whether the container limit alone makes V8 size its heap small enough',
};

/** The mirrors of the GET comparison (part 1) besides the as-shipped ones. */
export const GET_SETTINGS: readonly RuntimeSetting[] = [ARENA_MAX_2, SEMI_SPACE_8, RECOMMENDED, DAEMONSET_LIMIT];

/**
 * Part 2's nodes that only store the holder's records, one setting each (beside
 * three pullers as shipped). The first one is restarted as shipped after the
 * memory readings, to look up with an empty record store: it must not be the cgroup one.
 */
export const RECEIVER_SETTINGS: readonly RuntimeSetting[] = [ARENA_MAX_2, SEMI_SPACE_8, RECOMMENDED, DAEMONSET_LIMIT];
