/**
 * A memory cgroup for a mirror, as the DaemonSet's `limits.memory` gives its
 * container: Node sizes its V8 heap from the limit it finds at start
 * (uv_get_constrained_memory), so a mirror in a cgroup is a different process
 * from one on a large host. cgroup v2 (`memory.max`) or v1 (`memory.limit_in_bytes`).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = '/sys/fs/cgroup';
const PREFIX = 'shoal-bench-';

export interface MemoryCgroup {
  readonly dir: string;
  /** Runs a command inside the cgroup: `[...prefix, command, ...args]` (the shell enters it, then execs). */
  readonly commandPrefix: string[];
  /** Removes the cgroup; its processes must have exited. Never throws. */
  remove(): void;
}

function v2(): boolean {
  return existsSync(join(ROOT, 'cgroup.controllers'));
}

/** Where new memory cgroups go: v1's memory hierarchy, or the v2 root (which must delegate memory). */
function parent(): string {
  if (!v2()) return join(ROOT, 'memory');
  const controllers = readFileSync(join(ROOT, 'cgroup.subtree_control'), 'utf8');
  if (!controllers.split(/\s+/).includes('memory')) throw new Error(`${ROOT} does not delegate the memory controller to its children`);
  return ROOT;
}

export function createMemoryCgroup(name: string, limitBytes: number): MemoryCgroup {
  const dir = join(parent(), `${PREFIX}${name}-${process.pid}`);
  mkdirSync(dir);
  writeFileSync(join(dir, v2() ? 'memory.max' : 'memory.limit_in_bytes'), String(limitBytes));
  return {
    dir,
    commandPrefix: ['sh', '-c', `echo $$ > '${join(dir, 'cgroup.procs')}' && exec "$0" "$@"`],
    remove: () => {
      try {
        rmdirSync(dir);
      } catch {
        // still in use, or gone: removeLeftoverCgroups takes it on a later run
      }
    },
  };
}

/** Removes empty cgroups earlier runs left behind (a crash skips remove()). */
export function removeLeftoverCgroups(): void {
  let base: string;
  try {
    base = parent();
  } catch {
    return;
  }
  for (const entry of readdirSync(base).filter((e) => e.startsWith(PREFIX))) {
    try {
      rmdirSync(join(base, entry));
    } catch {
      // processes still inside: a live run's
    }
  }
}

/** Peak memory the kernel charged to the process's memory cgroup (what the OOM killer counts), or undefined outside one. */
export function cgroupPeakBytes(pid: number): number | undefined {
  let lines: string[];
  try {
    lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  } catch {
    return undefined;
  }
  const v1 = lines.map((l) => l.split(':')).find((f) => f[1]?.split(',').includes('memory'));
  const path = v1 !== undefined ? join(ROOT, 'memory', v1[2] ?? '/', 'memory.max_usage_in_bytes') : join(ROOT, lines.find((l) => l.startsWith('0::'))?.slice(3) ?? '/', 'memory.peak');
  if (!path.includes(PREFIX)) return undefined;
  try {
    return Number(readFileSync(path, 'utf8').trim());
  } catch {
    return undefined;
  }
}
