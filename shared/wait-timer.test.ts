import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { WaitTimer } from './wait-timer.ts';

describe('WaitTimer', function () {
  it('fires for a wait that lasts its time, once', async function () {
    let fired = 0;
    const timer = new WaitTimer(40, () => fired++);
    timer.start();
    await sleep(120);
    assert.equal(fired, 1);
    timer.stop();
  });

  it('never fires for waits that each end in time, however long they add up to, nor between them', async function () {
    let fired = 0;
    const timer = new WaitTimer(60, () => fired++);
    for (let i = 0; i < 5; i++) {
      timer.start();
      await sleep(30);
      timer.end();
      await sleep(80);
    }
    timer.stop();
    assert.equal(fired, 0);
  });

  it('times each wait from its own start', async function () {
    let fired = 0;
    const timer = new WaitTimer(60, () => fired++);
    timer.start();
    await sleep(40);
    timer.end();
    timer.start();
    await sleep(40);
    assert.equal(fired, 0, '80 ms since the first start, 40 since this one');
    await sleep(60);
    assert.equal(fired, 1);
    timer.stop();
  });

  it('does not fire once stopped', async function () {
    let fired = 0;
    const timer = new WaitTimer(30, () => fired++);
    timer.start();
    timer.stop();
    await sleep(80);
    assert.equal(fired, 0);
  });
});
