/**
 * Latency of sequential HEAD requests over one keep-alive connection per
 * target, as containerd resolves a tag. The series run in alternating batches
 * so noise on the shared machine falls on every target alike; the reference
 * target (nginx, a static file) shows the floor of this client and loopback.
 */
import { Agent, request, type IncomingMessage } from 'node:http';

export interface HeadTarget {
  name: string;
  /** `http://IP:PORT` */
  base: string;
  /** Path and query, sent as is; or one per request, by its number for this target (from 0, warm-up first). */
  path: string | ((n: number) => string);
  /** What is wrong with a response to `path`, or undefined when it is right. */
  check(res: IncomingMessage, path: string): string | undefined;
}

export interface HeadSeries {
  name: string;
  /** Request start to end of response, in ms, in the order sent (warm-up left out). */
  samplesMs: number[];
  /** Requests that went out on an already open connection. */
  reusedConnections: number;
  /** Distinct problems seen, with counts; empty when every response was right. */
  problems: Record<string, number>;
}

export interface HeadInit {
  targets: HeadTarget[];
  /** Timed requests per target. */
  count: number;
  /** Untimed requests per target first (connection, JIT, caches). */
  warmup: number;
  /** Requests to one target before switching to the next. */
  batch: number;
  /** Once aborted (time budget spent, interrupted), no further batch starts. */
  signal: AbortSignal;
}

const REQUEST_TIMEOUT_MS = 10_000;

export async function measureHeads(init: HeadInit): Promise<HeadSeries[]> {
  const agents = init.targets.map(() => new Agent({ keepAlive: true, maxSockets: 1 }));
  const series: HeadSeries[] = init.targets.map((t) => ({ name: t.name, samplesMs: [], reusedConnections: 0, problems: {} }));
  const sent = init.targets.map(() => 0);
  const pathOf = (i: number): string => {
    const target = init.targets[i]!;
    return typeof target.path === 'string' ? target.path : target.path(sent[i]!++);
  };
  try {
    for (const [i, target] of init.targets.entries()) {
      for (let n = 0; n < init.warmup; n++) {
        const path = pathOf(i);
        const r = await head(target, path, agents[i]!);
        if (r.problem !== undefined) throw new Error(`HEAD ${target.base}${path}: ${r.problem}`);
      }
    }
    for (let done = 0; done < init.count; done += init.batch) {
      init.signal.throwIfAborted();
      for (const [i, target] of init.targets.entries()) {
        const s = series[i]!;
        for (let n = 0; n < Math.min(init.batch, init.count - done); n++) {
          const r = await head(target, pathOf(i), agents[i]!);
          s.samplesMs.push(r.ms);
          if (r.reused) s.reusedConnections++;
          if (r.problem !== undefined) s.problems[r.problem] = (s.problems[r.problem] ?? 0) + 1;
        }
      }
    }
  } finally {
    for (const a of agents) a.destroy();
  }
  return series;
}

function head(target: HeadTarget, path: string, agent: Agent): Promise<{ ms: number; reused: boolean; problem: string | undefined }> {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const req = request(target.base, { method: 'HEAD', path, agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const problem = target.check(res, path);
      res.resume();
      res.once('end', () => resolve({ ms: Number(process.hrtime.bigint() - started) / 1e6, reused: req.reusedSocket, problem }));
      res.once('error', (err) => resolve({ ms: Number(process.hrtime.bigint() - started) / 1e6, reused: req.reusedSocket, problem: `response failed: ${err.message}` }));
    });
    req.once('timeout', () => req.destroy(new Error(`no answer in ${REQUEST_TIMEOUT_MS} ms`)));
    req.once('error', (err) => resolve({ ms: Number(process.hrtime.bigint() - started) / 1e6, reused: req.reusedSocket, problem: `request failed: ${err.message}` }));
    req.end();
  });
}
