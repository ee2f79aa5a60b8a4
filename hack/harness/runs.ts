/**
 * Run directories: every harness run works in `<runRoot>/<timestamp>-<pid>/`
 * with an `owner.pid` naming the Node process that made it. A directory whose
 * owner is gone belongs to a finished or crashed run: killLeftovers kills the
 * processes its pid files name, unmounts what is mounted below it and removes
 * it. Runs whose owner still lives (parallel suites) are left alone.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { unmountUnder } from './mounts.ts';
import { processStartTime, type PidRecord } from './procs.ts';

export const REPO_ROOT = resolve(import.meta.dirname, '../..');

/** `$SHOAL_RUN_ROOT`, else `<repo>/.run` (ignored by git). Keep it short: unix socket paths live below it. */
export function defaultRunRoot(): string {
  return process.env['SHOAL_RUN_ROOT'] ?? join(REPO_ROOT, '.run');
}

const OWNER_FILE = 'owner.pid';

export function isAlive(record: PidRecord): boolean {
  const now = processStartTime(record.pid);
  return now !== undefined && now === record.startTime;
}

function readPidRecord(path: string): PidRecord | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as PidRecord;
  } catch {
    return undefined;
  }
}

/** Creates a fresh run directory after cleaning up after earlier runs. */
export async function createRunDir(runRoot = defaultRunRoot()): Promise<string> {
  await killLeftovers(runRoot);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const dir = join(runRoot, `${stamp}-${process.pid}-${Math.random().toString(36).slice(2, 6)}`);
  mkdirSync(dir, { recursive: true });
  const owner: PidRecord = { pid: process.pid, startTime: processStartTime(process.pid) ?? '', command: process.argv.join(' ') };
  writeFileSync(join(dir, OWNER_FILE), JSON.stringify(owner) + '\n');
  return dir;
}

/** Live processes recorded by pid files anywhere below dir (not the owner). */
export function livePidsUnder(dir: string): PidRecord[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((p) => p.endsWith('.pid') && p !== OWNER_FILE)
    .map((p) => readPidRecord(join(dir, p)))
    .filter((r): r is PidRecord => r !== undefined && isAlive(r));
}

export interface LeftoverReport {
  killed: PidRecord[];
  removed: string[];
  errors: Error[];
}

/** Cleans up after every earlier run below runRoot whose owner is gone. Never throws; warns on what it could not clean. */
export async function killLeftovers(runRoot = defaultRunRoot()): Promise<LeftoverReport> {
  const report: LeftoverReport = { killed: [], removed: [], errors: [] };
  if (!existsSync(runRoot)) return report;
  for (const entry of readdirSync(runRoot)) {
    const dir = join(runRoot, entry);
    try {
      if (!statSync(dir).isDirectory()) continue;
      // Without owner.pid it is not a run directory (or not ours): leave it alone.
      const owner = readPidRecord(join(dir, OWNER_FILE));
      if (!owner || isAlive(owner)) continue;
      const victims = livePidsUnder(dir);
      for (const v of victims) signal(v, 'SIGTERM');
      for (let i = 0; i < 60 && victims.some(isAlive); i++) await sleep(50);
      for (const v of victims.filter(isAlive)) signal(v, 'SIGKILL');
      for (let i = 0; i < 40 && victims.some(isAlive); i++) await sleep(50);
      report.killed.push(...victims);
      const errors = await unmountUnder(dir);
      report.errors.push(...errors);
      if (errors.length === 0) {
        rmSync(dir, { recursive: true, force: true });
        report.removed.push(dir);
      }
    } catch (err) {
      report.errors.push(err as Error);
    }
  }
  for (const err of report.errors) console.warn(`harness: leftover cleanup: ${err.message}`);
  return report;
}

function signal(record: PidRecord, sig: NodeJS.Signals): void {
  try {
    if (isAlive(record)) process.kill(record.pid, sig);
  } catch {
    // raced with its exit
  }
}
