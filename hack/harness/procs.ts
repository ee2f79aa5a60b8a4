/**
 * Child processes for the real-process harness: each one logs to a file and
 * leaves a pid file in its directory, so a later run can find and kill it if
 * this run dies before its teardown (see runs.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ProcInit {
  /** Short name: the log is `<dir>/<name>.log`, the pid file `<dir>/<name>.pid`. */
  name: string;
  /** Directory for the log and pid file; must exist. */
  dir: string;
  command: string;
  args: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface Proc {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  /** Resolves with the exit code (or the signal name) once the process is gone. */
  readonly exited: Promise<number | string>;
  /** True until the process has exited. */
  running(): boolean;
  /** Last lines of the log, for error messages. */
  logTail(lines?: number): string;
  /** SIGTERM, then SIGKILL after graceMs (default 5000). Never throws. */
  stop(graceMs?: number): Promise<void>;
}

/** What a pid file holds: the start time tells a recorded process from a later one reusing its pid. */
export interface PidRecord {
  pid: number;
  startTime: string;
  command: string;
}

// Safety net: if this Node process exits without a teardown (mocha bailing out,
// an uncaught error), no child outlives it. Mounts are left to the next run.
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/**
 * The kernel's start time of a live pid (field 22 of /proc/PID/stat), or undefined
 * if it is gone or a zombie (a crashed run's orphans may wait unreaped).
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

export function spawnProc(init: ProcInit): Proc {
  mkdirSync(init.dir, { recursive: true });
  const logPath = join(init.dir, `${init.name}.log`);
  const pidPath = join(init.dir, `${init.name}.pid`);
  // Append, so a restarted process keeps the earlier part of its log (registry access logs span restarts).
  const logFd = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(init.command, init.args, {
      cwd: init.cwd,
      env: init.env ?? process.env,
      stdio: ['ignore', logFd, logFd],
    });
  } finally {
    closeSync(logFd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`cannot start ${init.command}: no pid`);
  live.add(child);
  const record: PidRecord = { pid, startTime: processStartTime(pid) ?? '', command: init.command };
  writeFileSync(pidPath, JSON.stringify(record) + '\n');

  let done = false;
  const exited = new Promise<number | string>((resolve) => {
    child.on('exit', (code, signal) => {
      done = true;
      live.delete(child);
      rmSync(pidPath, { force: true });
      resolve(code ?? signal ?? 'unknown');
    });
    child.on('error', () => {
      // spawn failure (ENOENT): 'exit' may never come
      done = true;
      live.delete(child);
      rmSync(pidPath, { force: true });
      resolve('spawn-error');
    });
  });

  const logTail = (lines = 30): string => tailOfFile(logPath, lines);

  const stop = async (graceMs = 5000): Promise<void> => {
    if (done) return;
    child.kill('SIGTERM');
    // Cancelled once the process is gone: a pending timer would hold mocha open.
    const cancel = new AbortController();
    const timer = sleep(graceMs, 'timeout' as const, { signal: cancel.signal }).catch(() => 'cancelled' as const);
    const first = await Promise.race([exited, timer]);
    cancel.abort();
    if (first === 'timeout' && !done) {
      child.kill('SIGKILL');
      await exited;
    }
  };

  return { name: init.name, pid, logPath, exited, running: () => !done, logTail, stop };
}

/** spawnProc, then waitReady; a process that never gets ready is stopped before the error propagates. */
export async function startProc(init: ProcInit, waitReady: (proc: Proc) => Promise<void>): Promise<Proc> {
  const proc = spawnProc(init);
  try {
    await waitReady(proc);
  } catch (err) {
    await proc.stop(1000);
    throw err;
  }
  return proc;
}

export function tailOfFile(path: string, lines: number): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export interface WaitOptions {
  /** What is awaited, for the error message. */
  what: string;
  /** Give up after this long (default 30 s). */
  timeoutMs?: number;
  /** If given, fail at once when it exits, and put its log tail in the error. */
  proc?: Proc;
  intervalMs?: number;
}

/** Polls check() until it returns true; throws with the process log tail on timeout or early exit. */
export async function waitUntil(check: () => Promise<boolean>, opts: WaitOptions): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  const fail = (why: string): Error =>
    new Error(`${opts.what}: ${why}` + (opts.proc ? `\n--- ${opts.proc.logPath} (tail) ---\n${opts.proc.logTail()}` : ''));
  for (;;) {
    if (opts.proc && !opts.proc.running()) throw fail(`process exited (${String(await opts.proc.exited)})`);
    try {
      if (await check()) return;
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) throw fail(`not ready after ${opts.timeoutMs ?? 30_000} ms`);
    await sleep(opts.intervalMs ?? 25);
  }
}

function canConnect(target: { path: string } | { host: string; port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(target);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export function waitForSocket(path: string, opts: WaitOptions): Promise<void> {
  return waitUntil(() => canConnect({ path }), opts);
}

export function waitForTcp(host: string, port: number, opts: WaitOptions): Promise<void> {
  return waitUntil(() => canConnect({ host, port }), opts);
}

/** Waits until GET url answers the given status (default 200). */
export function waitForHttp(url: string, opts: WaitOptions & { status?: number }): Promise<void> {
  return waitUntil(async () => {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.body?.cancel();
    return res.status === (opts.status ?? 200);
  }, opts);
}

/** A port free on host right now (bind to 0, read, close). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

export interface RunOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** Runs a command to completion; stdout as bytes; throws with the command line and stderr on failure. */
export function run(command: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 300_000,
      killSignal: 'SIGKILL',
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => err.push(chunk));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) {
        resolve({ stdout: Buffer.concat(out), stderr });
        return;
      }
      const line = [command, ...args].join(' ');
      reject(new Error(`${line} failed (${code ?? signal}): ${stderr.trim().split('\n').slice(-20).join('\n')}`));
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Stops every part even if some fail (in order), then throws one AggregateError. For after() hooks. */
export async function stopAll(...parts: ({ stop(): Promise<void> } | undefined)[]): Promise<void> {
  const errors: unknown[] = [];
  for (const part of parts) {
    try {
      await part?.stop();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, `teardown: ${errors.length} part(s) failed to stop cleanly`);
}
