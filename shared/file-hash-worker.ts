/**
 * Worker side of FileHashPool: hashes a file by path with positional reads,
 * checking it is the same inode the server streams, and stopping early when
 * the shared cancel flag is raised.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

export interface HashJob {
  readonly id: number;
  readonly path: string;
  readonly algorithm: string;
  /** The inode the server opened: the worker must hash the same file. */
  readonly dev: number;
  readonly ino: number;
  /** Int32Array over a SharedArrayBuffer; non-zero: stop. */
  readonly cancel: Int32Array;
}

export type HashResult = { readonly id: number; readonly hex: string; readonly bytes: number } | { readonly id: number; readonly error: string };

const CHUNK = 4 * 1024 * 1024;
const buffer = Buffer.allocUnsafe(CHUNK);

function hashFile(job: HashJob): HashResult {
  const fd = openSync(job.path, 'r');
  try {
    const st = fstatSync(fd);
    if (st.dev !== job.dev || st.ino !== job.ino) return { id: job.id, error: 'file changed while being served' };
    const hash = createHash(job.algorithm);
    let position = 0;
    for (;;) {
      if (Atomics.load(job.cancel, 0) !== 0) return { id: job.id, error: 'cancelled' };
      const n = readSync(fd, buffer, 0, CHUNK, position);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
      position += n;
    }
    return { id: job.id, hex: hash.digest('hex'), bytes: position };
  } finally {
    closeSync(fd);
  }
}

parentPort!.on('message', (job: HashJob) => {
  let result: HashResult;
  try {
    result = hashFile(job);
  } catch (err) {
    result = { id: job.id, error: (err as Error).message };
  }
  parentPort!.postMessage(result);
});
