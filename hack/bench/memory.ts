/**
 * Where a mirror's memory is: the kernel's view (peak and current resident,
 * split into the process's own anonymous memory and mapped files) beside V8's
 * (committed heap spaces, and external memory: Buffer and ArrayBuffer bytes
 * outside the heap), the latter from the mirror's own /metrics (prom-client's
 * default Node metrics), so no mirror code is involved.
 */
import { cgroupPeakBytes } from './cgroup.ts';
import { cpuTicks, statusBytes } from './procstat.ts';

export interface MemorySnapshot {
  /** VmHWM: peak resident since start. */
  hwm: number | undefined;
  rss: number | undefined;
  /** Resident anonymous memory: what the process itself allocated. */
  rssAnon: number | undefined;
  /** Resident mapped files: mostly the node binary, shared between processes and reclaimable. */
  rssFile: number | undefined;
  /** Committed V8 young generation (both semi-spaces). */
  heapNew: number | undefined;
  /** Committed V8 old space. */
  heapOld: number | undefined;
  /** Old space holding live or not yet collected objects. */
  heapOldUsed: number | undefined;
  /** Every other V8 space (code, large objects, trusted...). */
  heapOther: number | undefined;
  /** Buffer and ArrayBuffer bytes outside the V8 heap. */
  external: number | undefined;
  /** Peak charged to its memory cgroup, when it runs in one of the bench's (what a container limit counts). */
  cgroupPeak: number | undefined;
  /** CPU time the process used since it started. */
  cpuSeconds: number;
}

const SPACE_RE = /^shoal_nodejs_heap_space_size_(total|used)_bytes\{space="([a-z_]+)"\} ([0-9.eE+-]+)$/;

export async function readMemory(pid: number, metricsUrl: string | undefined, clockHz: number): Promise<MemorySnapshot> {
  const snapshot: MemorySnapshot = {
    hwm: statusBytes(pid, 'VmHWM'),
    rss: statusBytes(pid, 'VmRSS'),
    rssAnon: statusBytes(pid, 'RssAnon'),
    rssFile: statusBytes(pid, 'RssFile'),
    heapNew: undefined,
    heapOld: undefined,
    heapOldUsed: undefined,
    heapOther: undefined,
    external: undefined,
    cgroupPeak: cgroupPeakBytes(pid),
    cpuSeconds: cpuTicks(pid) / clockHz,
  };
  if (metricsUrl === undefined) return snapshot;
  let text: string;
  try {
    const res = await fetch(`${metricsUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
    text = await res.text();
  } catch {
    return snapshot;
  }
  let other = 0;
  for (const line of text.split('\n')) {
    const m = SPACE_RE.exec(line);
    if (m) {
      const [, kind, space, value] = m;
      const bytes = Number(value);
      if (kind === 'total' && space === 'new') snapshot.heapNew = bytes;
      else if (kind === 'total' && space === 'old') snapshot.heapOld = bytes;
      else if (kind === 'used' && space === 'old') snapshot.heapOldUsed = bytes;
      else if (kind === 'total') other += bytes;
      continue;
    }
    const ext = /^shoal_nodejs_external_memory_bytes ([0-9.eE+-]+)$/.exec(line);
    if (ext) snapshot.external = Number(ext[1]);
  }
  if (snapshot.heapNew !== undefined) snapshot.heapOther = other;
  return snapshot;
}
