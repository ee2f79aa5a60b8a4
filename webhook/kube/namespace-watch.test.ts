/**
 * Namespace annotations through client-node's list and watch against the API
 * stand-in: changes arrive over the watch, lookups make no API call, and the
 * watch comes back after the server ends it, drops it, or forgets its history.
 */
import assert from 'node:assert/strict';
import { startKubeApi, type KubeApi } from '../../hack/harness/kube-api.ts';
import { createKubeAccess, type ClusterAccess } from './access.ts';
import { captureLogger, until, writeKubeconfig, type LogLine } from './testing.ts';

describe('KubeAccess.namespaceAnnotations', function () {
  this.timeout(15_000);
  let api: KubeApi;
  let access: ClusterAccess;
  let lines: LogLine[];

  const lists = () => api.requests.filter((r) => r.path === '/api/v1/namespaces' && r.query.watch === undefined);
  const watches = () => api.requests.filter((r) => r.path === '/api/v1/namespaces' && r.query.watch === 'true');
  const annotations = (ns: string) => access.namespaceAnnotations(ns);

  async function connect(): Promise<void> {
    const captured = captureLogger();
    lines = captured.lines;
    access = createKubeAccess({ kubeconfig: writeKubeconfig(api), logger: captured.logger, retryDelayMs: 20, maxRetryDelayMs: 200 })!;
    await until(() => access.ready && api.watchCount('namespaces') === 1, 'listed and watching');
  }

  beforeEach(async function () {
    api = await startKubeApi();
    api.namespace('team-a', { 'shoal.dev/resolve': 'peers' });
    api.namespace('plain');
  });

  afterEach(async function () {
    await access.close();
    await api.stop();
  });

  it('is not ready and knows nothing before the first list', async function () {
    api.setLatency(300);
    const captured = captureLogger();
    access = createKubeAccess({ kubeconfig: writeKubeconfig(api), logger: captured.logger })!;
    assert.equal(access.ready, false);
    assert.equal(annotations('team-a'), undefined);
    await until(() => access.ready, 'ready');
    assert.deepEqual(annotations('team-a'), { 'shoal.dev/resolve': 'peers' });
  });

  it('answers from the list: annotations, {} for none, undefined for an unknown namespace; no API call per lookup', async function () {
    await connect();
    const before = api.requests.length;
    for (let i = 0; i < 100; i++) annotations('team-a');
    assert.deepEqual(annotations('team-a'), { 'shoal.dev/resolve': 'peers' });
    assert.deepEqual(annotations('plain'), {});
    assert.equal(annotations('nope'), undefined);
    assert.equal(api.requests.length, before);
    assert.ok(Object.isFrozen(annotations('team-a')));
    assert.equal(lists().length, 1);
    // Nothing changed since the list: the watch starts from the list's resourceVersion.
    assert.deepEqual(watches()[0]!.query, { watch: 'true', resourceVersion: api.resourceVersion(), allowWatchBookmarks: 'true' });
  });

  it('sees namespaces appear, change and disappear through the watch', async function () {
    await connect();
    api.namespace('new', { 'shoal.dev/resolve': 'upstream' });
    await until(() => annotations('new')?.['shoal.dev/resolve'] === 'upstream', 'the new namespace');
    api.namespace('team-a', { 'shoal.dev/resolve': 'upstream', other: 'x' });
    await until(() => annotations('team-a')?.['shoal.dev/resolve'] === 'upstream', 'the changed annotation');
    assert.deepEqual(annotations('team-a'), { 'shoal.dev/resolve': 'upstream', other: 'x' });
    api.namespace('team-a');
    await until(() => annotations('team-a') !== undefined && Object.keys(annotations('team-a')!).length === 0, 'annotations removed');
    api.remove('namespaces', undefined, 'new');
    await until(() => annotations('new') === undefined, 'the namespace gone');
    assert.equal(lists().length, 1, 'no list after the first');
  });

  for (const how of ['end', 'destroy'] as const) {
    it(`watches again from the last resourceVersion after the server ${how === 'end' ? 'ends the watch' : 'drops the connection'}`, async function () {
      await connect();
      api.namespace('during', { a: '1' });
      await until(() => annotations('during') !== undefined, 'the first event');
      const seen = api.resourceVersion();
      api.dropWatches(how);
      await until(() => watches().length === 2 && api.watchCount('namespaces') === 1, 'a second watch');
      assert.equal(watches()[1]!.query.resourceVersion, seen);
      api.namespace('after', { b: '2' });
      await until(() => annotations('after')?.b === '2', 'an event on the new watch');
      assert.equal(lists().length, 1, 'no list: the history was still there');
    });
  }

  it('lists again when its resourceVersion is too old (410 Expired), and drops what went away meanwhile', async function () {
    await connect();
    api.setLatency(200);
    api.dropWatches('end');
    // While it reconnects: changes, then history forgotten.
    api.remove('namespaces', undefined, 'plain');
    api.namespace('team-a', { 'shoal.dev/resolve': 'upstream' });
    api.compact();
    await until(() => lists().length === 2, 'a second list');
    await until(() => annotations('plain') === undefined && annotations('team-a')?.['shoal.dev/resolve'] === 'upstream', 'the new state');
    assert.ok(lines.some((l) => l.msg === 'namespace watch expired: listing again'));
    await until(() => api.watchCount('namespaces') === 1, 'watching again');
    assert.equal(watches().at(-1)!.query.resourceVersion, api.resourceVersion());
  });

  it('watches from the resourceVersion of the last bookmark', async function () {
    await connect();
    api.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'unrelated', namespace: 'team-a' }, type: 'Opaque' });
    api.bookmark();
    const bookmarked = api.resourceVersion();
    await new Promise((resolve) => setTimeout(resolve, 100));
    api.dropWatches('end');
    await until(() => watches().length === 2, 'a second watch');
    assert.equal(watches()[1]!.query.resourceVersion, bookmarked);
  });

  it('keeps trying, backing off, while the list is forbidden; ready once it is allowed', async function () {
    const lift = api.deny({ verb: 'list', resource: 'namespaces' });
    const captured = captureLogger();
    lines = captured.lines;
    access = createKubeAccess({ kubeconfig: writeKubeconfig(api), logger: captured.logger, retryDelayMs: 20, maxRetryDelayMs: 100 })!;
    await until(() => lists().length >= 3, 'three attempts');
    assert.equal(access.ready, false);
    assert.equal(annotations('team-a'), undefined);
    const failure = lines.find((l) => l.msg === 'namespace list failed')!;
    assert.equal(failure.status, 403);
    assert.equal(failure.reason, 'Forbidden');
    lift();
    await until(() => access.ready, 'ready');
    assert.deepEqual(annotations('team-a'), { 'shoal.dev/resolve': 'peers' });
  });

  it('backs off, doubling, while the watch fails, and keeps serving the last state', async function () {
    await access.close();
    const captured = captureLogger();
    lines = captured.lines;
    access = createKubeAccess({ kubeconfig: writeKubeconfig(api), logger: captured.logger, retryDelayMs: 50, maxRetryDelayMs: 1000 })!;
    await until(() => access.ready && api.watchCount('namespaces') === 1, 'listed and watching');
    api.deny({ verb: 'watch', resource: 'namespaces' });
    const first = watches().length;
    api.dropWatches('end');
    await until(() => watches().length >= first + 5, 'five more watch attempts');
    // The waits double: at least 100, 200, 400 ms between later attempts, less 20 % jitter; each gap adds a round trip.
    const at = watches().slice(first).map((r) => r.at);
    const gaps = at.slice(2).map((t, i) => t - at[i + 1]!);
    gaps.slice(0, 3).forEach((gap, i) => assert.ok(gap >= 0.8 * 100 * 2 ** i, `gaps ${gaps.join(', ')} ms`));
    assert.ok(lines.some((l) => l.msg === 'namespace watch failed' && l.status === 403));
    assert.deepEqual(annotations('team-a'), { 'shoal.dev/resolve': 'peers' });
    assert.equal(access.ready, true);
  });

  it('stops watching on close', async function () {
    await connect();
    await access.close();
    await until(() => api.watchCount() === 0, 'no watch');
    const count = api.requests.length;
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(api.requests.length, count);
  });
});
