/** Test helpers for webhook/kube: a logger that keeps its lines, polling with a deadline, a kubeconfig file. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeApi } from '../../hack/harness/kube-api.ts';
import { createLogger, type Logger } from '../../shared/log.ts';

export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** A debug-level logger whose lines are kept, parsed, in `lines`. */
export function captureLogger(): { logger: Logger; lines: LogLine[]; text: () => string } {
  const raw: string[] = [];
  const lines: LogLine[] = [];
  const logger = createLogger({
    level: 'debug',
    write: (line) => {
      raw.push(line);
      lines.push(JSON.parse(line) as LogLine);
    },
  });
  return { logger, lines, text: () => raw.join('') };
}

/** Polls check() until it holds; fails saying what was awaited after timeoutMs (default 5 s). */
export async function until(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(10);
  }
}

const tempDirs: string[] = [];

/** A fresh temporary directory, removed when the process exits. */
export function tempDir(prefix: string): string {
  if (tempDirs.length === 0) process.once('exit', () => tempDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** The stand-in's kubeconfig, written to a fresh file; returns its path. */
export function writeKubeconfig(api: KubeApi): string {
  const path = join(tempDir('shoal-kubeconfig-'), 'config');
  writeFileSync(path, api.kubeconfig());
  return path;
}
