/**
 * What the kernel says about a process and the machine: CPU time used (so a
 * slow server can be told CPU bound from waiting), peak resident memory, and
 * where the machine's cores went (steal shows a noisy neighbour on a shared VM).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { run } from '../harness/procs.ts';

/** Kernel clock ticks a second (USER_HZ), for /proc CPU times. */
export async function clockTicks(): Promise<number> {
  const { stdout } = await run('getconf', ['CLK_TCK']);
  const hz = Number(stdout.toString().trim());
  if (!Number.isInteger(hz) || hz <= 0) throw new Error(`getconf CLK_TCK said ${stdout.toString().trim()}`);
  return hz;
}

/** Fields of /proc/PID/stat from field 3 (state) on; the command name may hold spaces and parentheses. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** utime + stime of a process, all its threads, in ticks; 0 when it is gone. */
export function cpuTicks(pid: number): number {
  const f = statFields(pid);
  // Fields 14 and 15 of stat, counted from 1; the slice starts at field 3.
  return f === undefined ? 0 : Number(f[11]) + Number(f[12]);
}

/** cutime + cstime of this process: the CPU of its children that have ended and been waited for (the `ctr` pulls), in ticks. */
export function childrenTicks(): number {
  const f = statFields(process.pid);
  return f === undefined ? 0 : Number(f[13]) + Number(f[14]);
}

/**
 * utime + stime of each thread of a process, in ticks, summed by thread name
 * (Node: `MainThread`, `WorkerThread` for worker_threads, `V8Worker` for GC and
 * compiler helpers, `libuv-worker` for the fs pool).
 */
export function threadTicks(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out[name] = (out[name] ?? 0) + Number(f[11]) + Number(f[12]);
    } catch {
      // the thread ended between listing and reading
    }
  }
  return out;
}

/** Live direct children of pid (nginx's workers under its master). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    // Field 4 (ppid) is index 1.
    if (f !== undefined && Number(f[1]) === pid) out.push(Number(entry));
  }
  return out;
}

/**
 * A `kB` field of /proc/PID/status in bytes, or undefined when the process is gone.
 * VmHWM: peak resident; VmRSS = RssAnon (heap, stacks: the process's own memory)
 * + RssFile (mapped files: the node binary's pages, shared and reclaimable) + RssShmem.
 */
export function statusBytes(pid: number, field: 'VmHWM' | 'VmRSS' | 'RssAnon' | 'RssFile'): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Machine-wide CPU counters from the `cpu` line of /proc/stat, in ticks summed over cores. */
export interface SystemTicks {
  total: number;
  idle: number;
  steal: number;
}

export function systemTicks(): SystemTicks {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '));
  if (line === undefined) throw new Error('/proc/stat has no cpu line');
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const [, , , idle = 0, iowait = 0, , , steal = 0] = v;
  return { total: v.reduce((a, b) => a + b, 0), idle: idle + iowait, steal };
}

/** Share of all cores busy, and stolen by the hypervisor, between two readings. */
export function systemShares(before: SystemTicks, after: SystemTicks): { busy: number; steal: number } {
  const total = after.total - before.total;
  if (total <= 0) return { busy: 0, steal: 0 };
  return { busy: 1 - (after.idle - before.idle) / total, steal: (after.steal - before.steal) / total };
}
