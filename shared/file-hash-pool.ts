/**
 * Hashes files on worker threads, so that serving a large blob from disk
 * overlaps the hashing (about 2 GB/s a core for sha256) with the reads and
 * socket writes of the main thread instead of adding to them.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { HashJob, HashResult } from './file-hash-worker.ts';

export interface FileHashPoolInit {
  /** Worker threads. Default: available cores, at most 4. */
  workers?: number;
}

export interface FileHash {
  /** Resolves with the hex digest and the number of bytes hashed; rejects on error or cancel. */
  readonly result: Promise<{ hex: string; bytes: number }>;
  /** Stops the worker at its next chunk. */
  cancel(): void;
}

interface Pending {
  resolve: (r: { hex: string; bytes: number }) => void;
  reject: (e: Error) => void;
}

export class FileHashPool {
  readonly #workers: Worker[] = [];
  readonly #pending = new Map<number, Pending>();
  #next = 0;

  constructor(init: FileHashPoolInit = {}) {
    const count = init.workers ?? Math.min(4, availableParallelism());
    for (let i = 0; i < count; i++) {
      const worker = new Worker(new URL('./file-hash-worker.ts', import.meta.url));
      worker.on('message', (msg: HashResult) => this.#settle(msg));
      worker.unref();
      this.#workers.push(worker);
    }
  }

  hash(path: string, algorithm: string, identity: { dev: number; ino: number }): FileHash {
    const id = ++this.#next;
    const cancel = new Int32Array(new SharedArrayBuffer(4));
    const result = new Promise<{ hex: string; bytes: number }>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    const job: HashJob = { id, path, algorithm, dev: identity.dev, ino: identity.ino, cancel };
    // Jobs go round-robin; each worker works through its own queue in order.
    const worker = this.#workers[id % this.#workers.length]!;
    if (this.#pending.size === 1) for (const w of this.#workers) w.ref();
    worker.postMessage(job);
    return { result, cancel: () => Atomics.store(cancel, 0, 1) };
  }

  async close(): Promise<void> {
    for (const p of this.#pending.values()) p.reject(new Error('hash pool closed'));
    this.#pending.clear();
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }

  #settle(msg: HashResult): void {
    const pending = this.#pending.get(msg.id);
    if (pending === undefined) return;
    this.#pending.delete(msg.id);
    // Workers hold the process open only while they have work.
    if (this.#pending.size === 0) for (const w of this.#workers) w.unref();
    if ('error' in msg) pending.reject(new Error(msg.error));
    else pending.resolve({ hex: msg.hex, bytes: msg.bytes });
  }
}
