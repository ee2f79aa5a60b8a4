import assert from 'node:assert/strict';
import { isRetryableStatus, RetryPolicy } from './retry.ts';

class Transient extends Error {}
const retryable = (err: unknown) => err instanceof Transient;

describe('RetryPolicy', function () {
  it('retries 5xx other than 501/505, and nothing below 500', function () {
    for (const status of [500, 502, 503, 504, 599]) assert.equal(isRetryableStatus(status), true, String(status));
    for (const status of [200, 301, 400, 401, 403, 404, 405, 429, 501, 505]) assert.equal(isRetryableStatus(status), false, String(status));
  });

  it('backs off exponentially up to the cap, half of each step random', function () {
    const low = new RetryPolicy({ baseDelayMs: 100, maxDelayMs: 1000, random: () => 0 });
    const high = new RetryPolicy({ baseDelayMs: 100, maxDelayMs: 1000, random: () => 0.999999 });
    assert.deepEqual([1, 2, 3, 4, 5].map((n) => low.delayMs(n)), [50, 100, 200, 400, 500]);
    assert.deepEqual([1, 2, 3, 4, 5].map((n) => Math.round(high.delayMs(n))), [100, 200, 400, 800, 1000]);
  });

  it('makes 1 + retries attempts for retryable errors, then throws the last', async function () {
    const policy = new RetryPolicy({ retries: 2, baseDelayMs: 1 });
    const attempts: number[] = [];
    await assert.rejects(
      policy.run(
        (n) => {
          attempts.push(n);
          return Promise.reject(new Transient(`attempt ${n}`));
        },
        retryable,
        new AbortController().signal,
      ),
      /attempt 2/,
    );
    assert.deepEqual(attempts, [0, 1, 2]);
  });

  it('stops at the first error that is not retryable, and returns the first success', async function () {
    const policy = new RetryPolicy({ retries: 5, baseDelayMs: 1 });
    let calls = 0;
    await assert.rejects(
      policy.run(
        () => {
          calls++;
          return Promise.reject(new Error('final'));
        },
        retryable,
        new AbortController().signal,
      ),
      /final/,
    );
    assert.equal(calls, 1);
    const retries: number[] = [];
    const value = await policy.run(
      (n) => (n < 2 ? Promise.reject(new Transient('flaky')) : Promise.resolve('done')),
      retryable,
      new AbortController().signal,
      (n) => retries.push(n),
    );
    assert.equal(value, 'done');
    assert.deepEqual(retries, [1, 2]);
  });

  it('cuts a backoff short with the caller’s abort reason', async function () {
    const policy = new RetryPolicy({ retries: 3, baseDelayMs: 10_000, maxDelayMs: 10_000 });
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(new Error('review budget spent')), 20);
    await assert.rejects(
      policy.run(() => Promise.reject(new Transient('down')), retryable, controller.signal),
      /review budget spent/,
    );
    assert.ok(Date.now() - started < 2000);
  });
});
