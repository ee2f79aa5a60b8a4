/** The webhook bench's view of /proc: the bench's own readers, with a process's CPU and its threads' together. */
import { cpuTicks as processTicks, threadTicks } from '../procstat.ts';

export { clockTicks, systemTicks, type SystemTicks } from '../procstat.ts';

/** utime + stime of a process and of its threads by name, in ticks; zeros when it is gone. */
export function cpuTicks(pid: number): { total: number; threads: Record<string, number> } {
  return { total: processTicks(pid), threads: threadTicks(pid) };
}
