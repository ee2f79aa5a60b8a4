/**
 * GET throughput of one large blob, the same client against every server:
 * curl writing to /dev/null, one fresh connection a transfer. Rounds are
 * interleaved and the order rotates each round, so a burst of noise on the
 * shared machine hits every server alike rather than one server's whole series.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from '../harness/procs.ts';
import { cpuTicks, systemShares, systemTicks, threadTicks } from './procstat.ts';

export interface Server {
  /** Label in tables and JSON. */
  name: string;
  /** URL of the blob on this server. */
  blobUrl: string;
  /** Processes whose CPU time is this server's work (a mirror reading through gRPC makes containerd work too). */
  processes: () => { label: string; pid: number; byThread?: boolean }[];
}

export interface Transfer {
  server: string;
  /** 0: the untimed warm-up (page cache, JIT), left out of the figures. */
  round: number;
  /** Place in its round's order, from 0. */
  position: number;
  httpCode: number;
  bytes: number;
  /** curl's time_total. */
  seconds: number;
  /** curl's speed_download: bytes over the whole transfer time. */
  bytesPerSecond: number;
  /** CPU seconds each of the server's processes used during the transfer. */
  cpuSeconds: Record<string, number>;
  /** For processes marked byThread: their CPU seconds by thread name. */
  threadCpuSeconds: Record<string, Record<string, number>>;
  /** Shares of all cores busy and stolen by the hypervisor during the transfer. */
  system: { busy: number; steal: number };
  /** Why the transfer does not count (wrong status, short body, curl failure); absent when it is good. */
  problem?: string;
}

export interface ThroughputInit {
  servers: Server[];
  rounds: number;
  /** Body size every 200 must have. */
  expectedBytes: number;
  /** USER_HZ, for CPU times. */
  clockHz: number;
  /** Once aborted (time budget spent, interrupted), no further transfer starts. */
  signal: AbortSignal;
  /** Called after each transfer, for progress. */
  onTransfer?: (t: Transfer) => void;
}

const CURL_MAX_SECONDS = 120;
/** Lets the last server's tail work (closing, hashing cancelled, GC) finish before the next transfer. */
const PAUSE_MS = 200;

export async function measureThroughput(init: ThroughputInit): Promise<Transfer[]> {
  const transfers: Transfer[] = [];
  for (let round = 0; round <= init.rounds; round++) {
    const shift = round === 0 ? 0 : (round - 1) % init.servers.length;
    const order = [...init.servers.slice(shift), ...init.servers.slice(0, shift)];
    for (const [position, server] of order.entries()) {
      init.signal.throwIfAborted();
      await sleep(PAUSE_MS);
      const t = await transfer(server, round, position, init);
      transfers.push(t);
      init.onTransfer?.(t);
    }
  }
  return transfers;
}

async function transfer(server: Server, round: number, position: number, init: ThroughputInit): Promise<Transfer> {
  const processes = server.processes();
  const ticksBefore = processes.map((p) => cpuTicks(p.pid));
  const threadsBefore = processes.map((p) => (p.byThread ? threadTicks(p.pid) : {}));
  const systemBefore = systemTicks();
  let out: string;
  let failure: string | undefined;
  try {
    const { stdout } = await run(
      'curl',
      ['--silent', '--show-error', '--output', '/dev/null', '--max-time', String(CURL_MAX_SECONDS), '--write-out', '%{http_code} %{size_download} %{time_total} %{speed_download}', server.blobUrl],
      { timeoutMs: (CURL_MAX_SECONDS + 10) * 1000 },
    );
    out = stdout.toString().trim();
  } catch (err) {
    // curl exits non-zero on a body cut short (a mirror aborts a blob that fails its digest check).
    failure = (err as Error).message.split('\n').slice(-1)[0];
    out = '';
  }
  const system = systemShares(systemBefore, systemTicks());
  const cpuSeconds: Record<string, number> = {};
  const threadCpuSeconds: Record<string, Record<string, number>> = {};
  processes.forEach((p, i) => {
    cpuSeconds[p.label] = (cpuSeconds[p.label] ?? 0) + (cpuTicks(p.pid) - ticksBefore[i]!) / init.clockHz;
    if (!p.byThread) return;
    const before = threadsBefore[i]!;
    threadCpuSeconds[p.label] = Object.fromEntries(Object.entries(threadTicks(p.pid)).map(([name, ticks]) => [name, (ticks - (before[name] ?? 0)) / init.clockHz]));
  });
  const [code = '0', size = '0', seconds = '0', speed = '0'] = out.split(' ');
  const t: Transfer = {
    server: server.name,
    round,
    position,
    httpCode: Number(code),
    bytes: Number(size),
    seconds: Number(seconds),
    bytesPerSecond: Number(speed),
    cpuSeconds,
    threadCpuSeconds,
    system,
  };
  if (failure !== undefined) t.problem = `curl failed: ${failure}`;
  else if (t.httpCode !== 200) t.problem = `HTTP ${t.httpCode}`;
  else if (t.bytes !== init.expectedBytes) t.problem = `got ${t.bytes} bytes, want ${init.expectedBytes}`;
  return t;
}
