/**
 * CPU time from the kernel: how busy each server was while it was loaded, so a
 * throughput figure can be told CPU bound (its main thread near one core) from
 * waiting, and how much of the two cores the machine had for it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { run } from '../../harness/procs.ts';

/** Kernel clock ticks a second (USER_HZ), for /proc CPU times. */
export async function clockTicks(): Promise<number> {
  const { stdout } = await run('getconf', ['CLK_TCK']);
  const hz = Number(stdout.toString().trim());
  if (!Number.isInteger(hz) || hz <= 0) throw new Error(`getconf CLK_TCK said ${stdout.toString().trim()}`);
  return hz;
}

/** utime + stime (fields 14 and 15) of a stat line; the command name may hold spaces and parentheses. */
function ticksOf(stat: string): number {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/**
 * utime + stime in ticks, all threads of a process (`total`) and summed by
 * thread name (Node: `MainThread` runs the JavaScript, `V8Worker` GC and
 * compiler helpers, `libuv-worker` the thread pool). Empty when it is gone.
 */
export function cpuTicks(pid: number): { total: number; threads: Record<string, number> } {
  const threads: Record<string, number> = {};
  let total = 0;
  try {
    total = ticksOf(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        threads[name] = (threads[name] ?? 0) + ticksOf(stat);
      } catch {
        // the thread ended between listing and reading
      }
    }
  } catch {
    // the process is gone
  }
  return { total, threads };
}

/** Machine-wide CPU ticks summed over cores, from the `cpu` line of /proc/stat. */
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
