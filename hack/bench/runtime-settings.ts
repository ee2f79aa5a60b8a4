/**
 * Runtime settings a DaemonSet can give the mirror without touching its code:
 * environment (glibc's malloc tunables, NODE_OPTIONS) and the container's
 * memory limit. The bench runs mirrors as shipped (the environment
 * manifests/mirror-daemonset.yaml gives them) beside mirrors with other
 * settings, under the same load, so their memory can be told apart in one
 * run. Each setting tests one suspect.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../harness/runs.ts';

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

/** Where bench mirrors keep Node's compile cache; the DaemonSet keeps it under the data dir. */
const BENCH_COMPILE_CACHE = join(tmpdir(), 'shoal-bench-compile-cache');

/** The mirror container's literal environment values in manifests/mirror-daemonset.yaml, the compile cache moved to the bench's. */
function daemonSetEnv(): Record<string, string> {
  const path = join(REPO_ROOT, 'manifests', 'mirror-daemonset.yaml');
  type EnvVar = { name: string; value?: string };
  type Container = { name: string; env?: EnvVar[] };
  const [doc] = parseAllDocuments(readFileSync(path, 'utf8')).map((d) => d.toJS() as { spec: { template: { spec: { containers: Container[] } } } });
  const mirror = doc?.spec.template.spec.containers.find((c) => c.name === 'mirror');
  if (mirror === undefined) throw new Error(`${path}: no container named mirror`);
  const env: Record<string, string> = {};
  for (const { name, value } of mirror.env ?? []) if (value !== undefined) env[name] = value;
  if (env.NODE_COMPILE_CACHE !== undefined) env.NODE_COMPILE_CACHE = BENCH_COMPILE_CACHE;
  return env;
}

/** What the DaemonSet gives the mirror. */
export const AS_SHIPPED: RuntimeSetting = {
  name: 'as shipped (the DaemonSet\'s env)',
  env: daemonSetEnv(),
  suspect: 'the reference: what manifests/mirror-daemonset.yaml sets',
};

/**
 * Fills the compile cache as the DaemonSet's init container does: `configure`
 * loads all of the mirror's modules, so mirrors start without the type stripper.
 */
export function warmCompileCache(): void {
  const env = { ...process.env, ...AS_SHIPPED.env };
  if (env.NODE_COMPILE_CACHE === undefined) return;
  execFileSync(process.execPath, [join(REPO_ROOT, 'mirror', 'main.ts'), 'configure', '--help'], { env, stdio: 'ignore' });
}

/** A bare `node mirror/main.ts`: V8 and glibc size everything from the host. */
export const NO_SETTINGS: RuntimeSetting = { name: 'no settings', env: {}, suspect: 'what the settings save: none at all' };

export const ARENA_MAX_2: RuntimeSetting = {
  name: 'MALLOC_ARENA_MAX=2',
  env: { MALLOC_ARENA_MAX: '2' },
  suspect: 'glibc keeping freed memory in per-thread arenas',
};

/** NODE_OPTIONS alone: the V8 settings without the malloc and compile-cache ones. */
export const NODE_OPTIONS_ONLY: RuntimeSetting = {
  name: 'NODE_OPTIONS only (semi 8, old 256, pool 8K)',
  env: { NODE_OPTIONS: `--max-semi-space-size=8 --max-old-space-size=256 ${SMALL_BUFFER_POOL}` },
  suspect: 'the V8/Node settings alone: young generation 2 x 8 MiB, old space capped at 256 MiB, 8 KiB Buffer pool',
};

/** A container limited to the DaemonSet's memory request, no other setting: Node sizes its heap from the limit (young generation 2 x 1 MiB). */
export const DAEMONSET_LIMIT: RuntimeSetting = {
  name: 'in a 256 MiB cgroup, no other setting',
  env: {},
  memoryLimitBytes: 256 * 2 ** 20,
  suspect: 'whether a container limit alone makes V8 size its heap small enough',
};

/** The mirrors of the GET comparison (part 1) besides the as-shipped ones. */
export const GET_SETTINGS: readonly RuntimeSetting[] = [NO_SETTINGS, ARENA_MAX_2, NODE_OPTIONS_ONLY, DAEMONSET_LIMIT];

/**
 * Part 2's nodes that only store the holder's records, one setting each (beside
 * three pullers as shipped). The first one is restarted as shipped after the
 * memory readings, to look up with an empty record store: it must not be the cgroup one.
 */
export const RECEIVER_SETTINGS: readonly RuntimeSetting[] = [NO_SETTINGS, ARENA_MAX_2, NODE_OPTIONS_ONLY, DAEMONSET_LIMIT];
