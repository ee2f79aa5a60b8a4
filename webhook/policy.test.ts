import assert from 'node:assert/strict';
import { podPolicy } from './policy.ts';

describe('annotation policy', () => {
  it('defaults: pin, auto', () => {
    assert.deepEqual(podPolicy(undefined, undefined), { pin: true, mode: 'auto', warnings: [] });
  });

  it('each key on its own: the pod wins, the namespace fills in', () => {
    const ns = { 'shoal.dev/resolve': 'peers', 'shoal.dev/pin': 'false' };
    assert.deepEqual(podPolicy({ 'shoal.dev/resolve': 'upstream' }, ns), { pin: false, mode: 'upstream', warnings: [] });
    assert.deepEqual(podPolicy({ 'shoal.dev/pin': 'true' }, ns), { pin: true, mode: 'peers', warnings: [] });
  });

  it('values it does not know: the default, and a warning that says where the value came from', () => {
    const got = podPolicy({ 'shoal.dev/pin': 'False' }, { 'shoal.dev/resolve': 'x'.repeat(100) });
    assert.equal(got.pin, true);
    assert.equal(got.mode, 'auto');
    assert.deepEqual(got.warnings, [
      'shoal: pod annotation shoal.dev/pin="False" is not "true" or "false"; pinning',
      `shoal: namespace annotation shoal.dev/resolve="${'x'.repeat(37)}..." is not one of auto, upstream, peers; using auto`,
    ]);
  });
});
