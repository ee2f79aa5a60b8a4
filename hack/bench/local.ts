/**
 * Part 1, one node: GET throughput of a large blob (mirrors against nginx on
 * the same file), HEAD manifest by tag, and the mirrors' memory, including
 * mirrors run with runtime settings under the same GET load.
 */
import { rmSync } from 'node:fs';
import { startFixture, type Fixture } from './fixture.ts';
import { measureHeads, type HeadSeries } from './head.ts';
import { readMemory, type MemorySnapshot } from './memory.ts';
import { statusBytes } from './procstat.ts';
import type { MemoryReading } from './report.ts';
import { measureThroughput, type Transfer } from './throughput.ts';

export interface LocalConfig {
  rounds: number;
  heads: number;
  headWarmup: number;
  headBatch: number;
  blobBytes: number;
  seed: string;
}

export interface LocalRun {
  transfers: Transfer[];
  heads: HeadSeries[];
  memory: Record<string, MemoryReading>;
  /** Heap and kernel view of each mirror at the end. */
  memoryEnd: Record<string, MemorySnapshot>;
  blob: { digest: string; size: number } | undefined;
  image: { ref: string; digest: string; size: number } | undefined;
  runDir: string | undefined;
  /** Why the part could not complete (its samples so far are kept). */
  error?: string;
  teardownError?: string;
}

/** What each part of the bench is run with; `C` is the part's own config. */
export interface PartInit<C> {
  config: C;
  clockHz: number;
  signal: AbortSignal;
  keepRunDir: boolean;
  log: (line: string) => void;
}

export type LocalInit = PartInit<LocalConfig>;

export async function runLocal(init: LocalInit): Promise<LocalRun> {
  const { config, signal, log } = init;
  const result: LocalRun = { transfers: [], heads: [], memory: {}, memoryEnd: {}, blob: undefined, image: undefined, runDir: undefined };
  let fixture: Fixture | undefined;
  try {
    fixture = await startFixture({ blobBytes: config.blobBytes, seed: config.seed, log });
    const f = fixture;
    result.blob = { digest: f.blob.digest, size: f.blob.size };
    result.image = { ref: f.image.ref, digest: f.image.digest, size: f.image.size };
    result.runDir = f.runDir;
    for (const [name, pid] of Object.entries(f.mirrorPids)) {
      result.memory[name] = { hwmIdle: statusBytes(pid, 'VmHWM'), hwmAfterGet: undefined, hwmAfterHead: undefined, rssEnd: undefined };
    }
    log(`GET: warm-up round, then ${config.rounds} timed rounds (MiB/s)`);
    let line: string[] = [];
    // Collected as they come, so an interrupted run still leaves its samples in the JSON.
    await measureThroughput({
      servers: f.servers,
      rounds: config.rounds,
      expectedBytes: config.blobBytes,
      clockHz: init.clockHz,
      signal,
      onTransfer: (t) => {
        result.transfers.push(t);
        line.push(`${t.server} ${t.problem ?? (t.bytesPerSecond / 2 ** 20).toFixed(0)}`);
        if (line.length === f.servers.length) {
          log(`  ${t.round === 0 ? 'warm-up' : `round ${t.round}`}: ${line.join(' | ')}`);
          line = [];
        }
      },
    });
    for (const [name, pid] of Object.entries(f.mirrorPids)) result.memory[name]!.hwmAfterGet = statusBytes(pid, 'VmHWM');

    log(`HEAD: ${config.headWarmup} warm-up then ${config.heads} timed requests per target, in batches of ${config.headBatch}`);
    result.heads = await measureHeads({ targets: f.headTargets, count: config.heads, warmup: config.headWarmup, batch: config.headBatch, signal });
    for (const [name, pid] of Object.entries(f.mirrorPids)) {
      result.memory[name]!.hwmAfterHead = statusBytes(pid, 'VmHWM');
      result.memory[name]!.rssEnd = statusBytes(pid, 'VmRSS');
      result.memoryEnd[name] = await readMemory(pid, f.mirrorMetrics[name], init.clockHz);
    }
  } catch (err) {
    result.error = (err as Error).stack ?? String(err);
  } finally {
    result.teardownError = await tearDown(init, fixture);
  }
  return result;
}

/**
 * Stops what a part started and removes its run directory (unless kept);
 * says what went wrong, for the JSON's teardownError.
 */
export async function tearDown(init: PartInit<unknown>, started: { stop(): Promise<void>; runDir: string } | undefined): Promise<string | undefined> {
  init.log('teardown');
  try {
    await started?.stop();
    if (started !== undefined && !init.keepRunDir) rmSync(started.runDir, { recursive: true, force: true });
    return undefined;
  } catch (err) {
    return err instanceof AggregateError ? `${err.message}: ${err.errors.map(String).join('; ')}` : String(err);
  }
}
