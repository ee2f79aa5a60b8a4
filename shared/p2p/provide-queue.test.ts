import assert from 'node:assert/strict';
import { ProvideQueue } from './provide-queue.ts';

/** A provide function that takes `ms` and records concurrency and order. */
function recorder(ms = 2) {
  const state = { running: 0, peak: 0, order: [] as string[], aborted: [] as string[] };
  const provide = async (key: string, signal: AbortSignal) => {
    state.running++;
    state.peak = Math.max(state.peak, state.running);
    state.order.push(key);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, ms);
        signal.addEventListener('abort', () => {
          clearTimeout(timer);
          state.aborted.push(key);
          reject(signal.reason as Error);
        });
      });
    } finally {
      state.running--;
    }
  };
  return { state, provide };
}

describe('ProvideQueue', () => {
  it('never runs more than `concurrency` provides at once, and runs each key', async () => {
    const { state, provide } = recorder(1);
    const queue = new ProvideQueue({ provide, concurrency: 8, timeoutMs: 10_000 });
    const keys = Array.from({ length: 300 }, (_, i) => `sha256:${i}`);
    for (const key of keys) queue.enqueue(key);
    assert.equal(queue.inFlight, 8);
    assert.equal(queue.pending, 292);
    await queue.idle();
    assert.equal(state.peak, 8);
    assert.equal(queue.peakInFlight, 8);
    assert.deepEqual(state.order, keys, 'FIFO');
  });

  it('keeps one pending entry per key, and skips a key whose provide is running', async () => {
    const { state, provide } = recorder(5);
    const queue = new ProvideQueue({ provide, concurrency: 1, timeoutMs: 10_000 });
    queue.enqueue('a');
    queue.enqueue('a');
    queue.enqueue('b');
    queue.enqueue('b');
    queue.enqueue('c');
    assert.equal(queue.pending, 2);
    await queue.idle();
    assert.deepEqual(state.order, ['a', 'b', 'c']);
  });

  it('runs urgent keys before routine ones', async () => {
    const { state, provide } = recorder(1);
    const queue = new ProvideQueue({ provide, concurrency: 1, timeoutMs: 10_000 });
    queue.enqueue('routine-1');
    queue.enqueue('routine-2');
    queue.enqueue('routine-3');
    queue.enqueue('urgent-1', true);
    queue.enqueue('routine-3', true);
    await queue.idle();
    assert.deepEqual(state.order, ['routine-1', 'urgent-1', 'routine-3', 'routine-2']);
  });

  it('drops a pending key, and aborts a running one without reporting it', async () => {
    const { state, provide } = recorder(50);
    const settled: string[] = [];
    const queue = new ProvideQueue({ provide, concurrency: 1, timeoutMs: 10_000, onSettled: (key) => settled.push(key) });
    queue.enqueue('running');
    queue.enqueue('pending');
    queue.enqueue('kept');
    queue.drop('pending');
    queue.drop('running');
    await queue.idle();
    assert.deepEqual(state.order, ['running', 'kept']);
    assert.deepEqual(state.aborted, ['running']);
    assert.deepEqual(settled, ['kept']);
  });

  it('counts an aborted provide against the bound until it settles', async () => {
    let release: () => void = () => {};
    let running = 0;
    let peak = 0;
    const queue = new ProvideQueue({
      concurrency: 1,
      timeoutMs: 10_000,
      provide: async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((resolve) => (release = resolve)); // ignores its signal
        running--;
      },
    });
    queue.enqueue('slow');
    queue.drop('slow');
    queue.enqueue('next');
    assert.equal(queue.inFlight, 1);
    assert.equal(queue.pending, 1);
    release();
    await new Promise((resolve) => setTimeout(resolve, 0));
    release();
    await queue.idle();
    assert.equal(peak, 1);
  });

  it('aborts a provide that outlives its timeout and reports the error', async () => {
    const { provide } = recorder(1_000);
    const errors: unknown[] = [];
    const queue = new ProvideQueue({ provide, concurrency: 1, timeoutMs: 20, onSettled: (_key, err) => errors.push(err) });
    queue.enqueue('slow');
    await queue.idle();
    assert.equal(errors.length, 1);
    assert.equal((errors[0] as Error).name, 'TimeoutError');
  });

  it('close aborts running provides and drops the rest', async () => {
    const { state, provide } = recorder(1_000);
    const queue = new ProvideQueue({ provide, concurrency: 2, timeoutMs: 10_000 });
    for (const key of ['a', 'b', 'c']) queue.enqueue(key);
    await queue.close();
    assert.deepEqual(state.aborted.sort(), ['a', 'b']);
    queue.enqueue('d');
    assert.equal(queue.pending, 0);
  });
});
