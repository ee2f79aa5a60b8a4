import assert from 'node:assert/strict';
import { CircuitBreaker, CircuitOpenError, type CallOutcome, type CircuitState } from './circuit-breaker.ts';

class Boom extends Error {}
const judge = (err: unknown): CallOutcome => (err instanceof Boom ? 'failure' : 'ignored');
const ok = () => Promise.resolve('ok');
const fail = () => Promise.reject(new Boom('down'));

describe('CircuitBreaker', function () {
  let now: number;
  let changes: string[];
  const breaker = (init: { failureThreshold?: number; windowMs?: number; cooldownMs?: number } = {}) =>
    new CircuitBreaker({ failureThreshold: 3, windowMs: 1000, cooldownMs: 5000, ...init, now: () => now, onStateChange: (to: CircuitState, from: CircuitState) => changes.push(`${from}->${to}`) });

  beforeEach(function () {
    now = 0;
    changes = [];
  });

  it('opens after the threshold of consecutive failures and then fails fast without calling', async function () {
    const b = breaker();
    for (let i = 0; i < 3; i++) await assert.rejects(b.run(fail, judge), Boom);
    assert.equal(b.state, 'open');
    let called = false;
    await assert.rejects(
      b.run(() => {
        called = true;
        return ok();
      }, judge),
      (err: unknown) => err instanceof CircuitOpenError && err.retryInMs === 5000,
    );
    assert.equal(called, false);
    assert.deepEqual(changes, ['closed->open']);
  });

  it('starts counting again after a success', async function () {
    const b = breaker();
    await assert.rejects(b.run(fail, judge));
    await assert.rejects(b.run(fail, judge));
    await b.run(ok, judge);
    await assert.rejects(b.run(fail, judge));
    await assert.rejects(b.run(fail, judge));
    assert.equal(b.state, 'closed');
    assert.equal(b.failures, 2);
  });

  it('does not add up failures further apart than the window', async function () {
    const b = breaker();
    await assert.rejects(b.run(fail, judge));
    now += 600;
    await assert.rejects(b.run(fail, judge));
    now += 1001;
    await assert.rejects(b.run(fail, judge));
    assert.equal(b.state, 'closed');
    assert.equal(b.failures, 1);
    now += 999;
    await assert.rejects(b.run(fail, judge));
    now += 999;
    await assert.rejects(b.run(fail, judge));
    assert.equal(b.state, 'open');
  });

  it('ignores errors its judge does not blame on the upstream', async function () {
    const b = breaker({ failureThreshold: 1 });
    await assert.rejects(b.run(() => Promise.reject(new Error('caller gave up')), judge));
    assert.equal(b.state, 'closed');
  });

  it('after the cooldown lets exactly one probe through; its success closes the circuit', async function () {
    const b = breaker({ failureThreshold: 1 });
    await assert.rejects(b.run(fail, judge));
    now += 4999;
    assert.equal(b.state, 'open');
    now += 1;
    assert.equal(b.state, 'half-open');
    let release!: () => void;
    const probe = b.run(() => new Promise<string>((resolve) => (release = () => resolve('probed'))), judge);
    await assert.rejects(b.run(ok, judge), (err: unknown) => err instanceof CircuitOpenError && err.retryInMs === 0);
    release();
    assert.equal(await probe, 'probed');
    assert.equal(b.state, 'closed');
    assert.equal(await b.run(ok, judge), 'ok');
    assert.deepEqual(changes, ['closed->open', 'open->half-open', 'half-open->closed']);
  });

  it('opens again for a full cooldown when the probe fails', async function () {
    const b = breaker({ failureThreshold: 1 });
    await assert.rejects(b.run(fail, judge));
    now += 5000;
    await assert.rejects(b.run(fail, judge), Boom);
    assert.equal(b.state, 'open');
    now += 4999;
    await assert.rejects(b.run(ok, judge), CircuitOpenError);
    now += 1;
    assert.equal(await b.run(ok, judge), 'ok');
    assert.deepEqual(changes, ['closed->open', 'open->half-open', 'half-open->open', 'open->half-open', 'half-open->closed']);
  });

  it('frees the probe slot when the probe’s outcome is ignored, and ignores stale calls', async function () {
    const b = breaker({ failureThreshold: 1 });
    let releaseStale!: () => void;
    const stale = b.run(() => new Promise<string>((resolve) => (releaseStale = () => resolve('late'))), judge);
    await assert.rejects(b.run(fail, judge));
    now += 5000;
    await assert.rejects(b.run(() => Promise.reject(new Error('caller gave up')), judge));
    assert.equal(b.state, 'half-open');
    // A call begun before the circuit opened does not close it.
    releaseStale();
    await stale;
    assert.equal(b.state, 'half-open');
    assert.equal(await b.run(ok, judge), 'ok');
    assert.equal(b.state, 'closed');
  });
});
