/**
 * Pinning, end to end over HTTPS: reviews as kube-apiserver sends them, the
 * answer's JSON Patch applied with fast-json-patch, the resulting pod compared
 * with the one expected.
 */
import assert from 'node:assert/strict';
import jsonpatch, { type Operation } from 'fast-json-patch';
import { request } from 'node:https';
import { readMetric } from '../hack/harness/http.ts';
import { createReview, ephemeralReview, fakeDigest, FakeKube, FakeResolver, pod, SERVICE_HOST, startTestWebhook, type HttpsAnswer, type TestWebhook } from './testing.ts';

type Json = Record<string, unknown>;

const NGINX = fakeDigest('nginx:1.27');
const BUSYBOX = fakeDigest('busybox:1.36');
const APP = fakeDigest('registry.local:5000/team/app:v2');
const LOCAL = fakeDigest('localhost:5000/tools/x:latest');
const SIDECAR = fakeDigest('ghcr.io/org/sidecar:3');

/** The review's answer, checked for what every answer must have, with the patched pod. */
function answerOf(review: Json, res: HttpsAnswer): { response: Json; patch: Operation[]; pod: Json; warnings: string[] } {
  assert.equal(res.status, 200, res.body.toString());
  assert.match(String(res.headers['content-type']), /^application\/json/);
  const body = res.json();
  assert.equal(body.apiVersion, 'admission.k8s.io/v1');
  assert.equal(body.kind, 'AdmissionReview');
  const request = review.request as Json;
  const response = body.response as Json;
  assert.equal(response.uid, request.uid);
  assert.equal(response.allowed, true);
  let patch: Operation[] = [];
  if (response.patch !== undefined) {
    assert.equal(response.patchType, 'JSONPatch');
    patch = JSON.parse(Buffer.from(response.patch as string, 'base64').toString('utf8')) as Operation[];
  } else {
    assert.equal(response.patchType, undefined);
  }
  const pod = jsonpatch.applyPatch(structuredClone(request.object), patch, true, false).newDocument as Json;
  return { response, patch, pod, warnings: (response.warnings as string[] | undefined) ?? [] };
}

function spec(p: Json): Json {
  return p.spec as Json;
}
function images(p: Json, field = 'containers'): string[] {
  return (spec(p)[field] as { image: string }[]).map((c) => c.image);
}
function annotations(p: Json): Record<string, string> | undefined {
  return (p.metadata as Json).annotations as Record<string, string> | undefined;
}

describe('webhook: pinning pods', function () {
  let resolver: FakeResolver;
  let kube: FakeKube;
  let hook: TestWebhook;

  beforeEach(async function () {
    resolver = new FakeResolver()
      .set('docker.io/library/nginx:1.27', { digest: NGINX, by: 'peer' })
      .set('docker.io/library/busybox:1.36', { digest: BUSYBOX, by: 'cache' })
      .set('registry.local:5000/team/app:v2', { digest: APP, by: 'upstream' })
      .set('localhost:5000/tools/x:latest', { digest: LOCAL, by: 'upstream' })
      .set('ghcr.io/org/sidecar:3', { digest: SIDECAR, by: 'peer' });
    kube = new FakeKube();
    hook = await startTestWebhook({ resolver, kube });
  });
  afterEach(() => hook.close());

  it('pins containers and initContainers and adds the annotations map when the pod has none', async function () {
    const object = pod({
      initContainers: [{ name: 'migrate', image: 'registry.local:5000/team/app:v2' }],
      containers: [
        { name: 'web', image: 'nginx:1.27' },
        { name: 'tools', image: 'localhost:5000/tools/x' },
      ],
    });
    const review = createReview(object);
    const { pod: patched, warnings, patch } = answerOf(review, await hook.review(review));
    const expected = pod({
      initContainers: [{ name: 'migrate', image: `registry.local:5000/team/app:v2@${APP.text}` }],
      containers: [
        { name: 'web', image: `nginx:1.27@${NGINX.text}` },
        { name: 'tools', image: `localhost:5000/tools/x@${LOCAL.text}` },
      ],
      annotations: {
        'shoal.dev/original-images': JSON.stringify({ migrate: 'registry.local:5000/team/app:v2', web: 'nginx:1.27', tools: 'localhost:5000/tools/x' }),
        'shoal.dev/resolved-by': JSON.stringify({ migrate: 'upstream', web: 'peer', tools: 'upstream' }),
      },
    });
    assert.deepEqual(patched, expected);
    assert.deepEqual(warnings, []);
    assert.deepEqual(
      patch.find((op) => op.path === '/metadata/annotations'),
      { op: 'add', path: '/metadata/annotations', value: (expected.metadata as Json).annotations },
    );
  });

  it('adds to an existing annotations map with the / in the keys escaped as ~1, keeping other annotations', async function () {
    const object = pod({ annotations: { 'team.example/owner': 'web', 'a~b/c': 'kept' }, containers: [{ name: 'web', image: 'nginx:1.27' }] });
    const review = createReview(object);
    const { pod: patched, patch } = answerOf(review, await hook.review(review));
    assert.deepEqual(annotations(patched), {
      'team.example/owner': 'web',
      'a~b/c': 'kept',
      'shoal.dev/original-images': '{"web":"nginx:1.27"}',
      'shoal.dev/resolved-by': '{"web":"peer"}',
    });
    assert.deepEqual(
      patch.map((op) => op.path),
      ['/spec/containers/0/image', '/metadata/annotations/shoal.dev~1original-images', '/metadata/annotations/shoal.dev~1resolved-by'],
    );
  });

  it('keeps the records of an earlier pass (a reinvoked webhook) and extends them', async function () {
    const object = pod({
      annotations: { 'shoal.dev/original-images': '{"web":"nginx:1.27"}', 'shoal.dev/resolved-by': '{"web":"peer"}' },
      containers: [
        { name: 'web', image: `nginx:1.27@${NGINX.text}` },
        { name: 'sidecar', image: 'ghcr.io/org/sidecar:3' },
      ],
    });
    const review = createReview(object);
    const { pod: patched, patch } = answerOf(review, await hook.review(review));
    assert.deepEqual(annotations(patched), {
      'shoal.dev/original-images': '{"web":"nginx:1.27","sidecar":"ghcr.io/org/sidecar:3"}',
      'shoal.dev/resolved-by': '{"web":"peer","sidecar":"peer"}',
    });
    assert.ok(patch.filter((op) => op.path.startsWith('/metadata')).every((op) => op.op === 'replace'));
  });

  it('leaves images that already carry a digest alone, and does not ask the resolver about them', async function () {
    const pinned = `docker.io/library/redis:7@${fakeDigest('redis').text}`;
    const object = pod({ containers: [{ name: 'cache', image: pinned }, { name: 'web', image: 'nginx:1.27' }] });
    const review = createReview(object);
    const { pod: patched, warnings } = answerOf(review, await hook.review(review));
    assert.deepEqual(images(patched), [pinned, `nginx:1.27@${NGINX.text}`]);
    assert.deepEqual(JSON.parse(annotations(patched)!['shoal.dev/original-images']!), { web: 'nginx:1.27' });
    assert.deepEqual(warnings, []);
    assert.deepEqual(resolver.calls.map((c) => c.ref.original), ['nginx:1.27']);
  });

  it('leaves a digest of an algorithm it does not know alone too, without a warning', async function () {
    const image = `ghcr.io/org/app@sha384:${'a'.repeat(96)}`;
    const review = createReview(pod({ containers: [{ name: 'app', image }] }));
    const { patch, warnings } = answerOf(review, await hook.review(review));
    assert.deepEqual(patch, []);
    assert.deepEqual(warnings, []);
  });

  it('many images not pinned: at most ten warnings, the last one summing up the rest', async function () {
    const containers = Array.from({ length: 14 }, (_, i) => ({ name: `c${i}`, image: `ghcr.io/org/missing-${i}:1` }));
    const review = createReview(pod({ containers }));
    const { warnings } = answerOf(review, await hook.review(review));
    assert.equal(warnings.length, 10);
    assert.match(warnings[8]!, /container "c8"/);
    assert.equal(warnings[9], 'shoal: 5 more warnings (see the webhook log)');
  });

  it('answers without a patch when every image is already pinned', async function () {
    const review = createReview(pod({ containers: [{ name: 'web', image: `nginx@${NGINX.text}` }] }));
    const { response, patch } = answerOf(review, await hook.review(review));
    assert.deepEqual(patch, []);
    assert.deepEqual(Object.keys(response).sort(), ['allowed', 'uid']);
  });

  it('leaves an image it cannot resolve or parse unchanged, with one short warning each, and pins the others', async function () {
    const object = pod({
      containers: [
        { name: 'web', image: 'nginx:1.27' },
        { name: 'ghost', image: 'ghcr.io/org/nope:1' },
        { name: 'bad', image: 'Not A Reference' },
        { name: 'upper', image: 'docker.io/Library/Nginx:1' },
      ],
    });
    const review = createReview(object);
    const { pod: patched, warnings } = answerOf(review, await hook.review(review));
    assert.deepEqual(images(patched), [`nginx:1.27@${NGINX.text}`, 'ghcr.io/org/nope:1', 'Not A Reference', 'docker.io/Library/Nginx:1']);
    assert.equal(warnings.length, 3);
    assert.match(warnings[0]!, /^shoal: container "ghost" image "ghcr\.io\/org\/nope:1" not pinned: ghcr\.io\/org\/nope:1: not found$/);
    assert.match(warnings[1]!, /^shoal: container "bad" not pinned: invalid image reference "Not A Reference"$/);
    assert.match(warnings[2]!, /^shoal: container "upper" not pinned: image reference "docker\.io\/Library\/Nginx:1": invalid repository/);
    for (const w of warnings) assert.ok(w.length <= 256);
    assert.deepEqual(JSON.parse(annotations(patched)!['shoal.dev/original-images']!), { web: 'nginx:1.27' });
  });

  it('resolves an image used by several containers once', async function () {
    const object = pod({ initContainers: [{ name: 'init', image: 'nginx:1.27' }], containers: [{ name: 'a', image: 'nginx:1.27' }, { name: 'b', image: 'nginx:1.27' }] });
    const review = createReview(object);
    const { pod: patched } = answerOf(review, await hook.review(review));
    assert.deepEqual(images(patched), [`nginx:1.27@${NGINX.text}`, `nginx:1.27@${NGINX.text}`]);
    assert.deepEqual(images(patched, 'initContainers'), [`nginx:1.27@${NGINX.text}`]);
    assert.equal(resolver.calls.length, 1);
  });

  it('pins only the ephemeral containers an ephemeralcontainers update adds, and writes no annotations there', async function () {
    const before = pod({ containers: [{ name: 'app', image: 'nginx:1.27' }], ephemeralContainers: [{ name: 'debugger-old', image: 'busybox:1.36' }] });
    const after = pod({ containers: [{ name: 'app', image: 'nginx:1.27' }], ephemeralContainers: [{ name: 'debugger-old', image: 'busybox:1.36' }, { name: 'debugger-new', image: 'busybox:1.36' }] });
    const review = ephemeralReview(before, after);
    const { pod: patched, patch, warnings } = answerOf(review, await hook.review(review));
    assert.deepEqual(patch, [{ op: 'replace', path: '/spec/ephemeralContainers/1/image', value: `busybox:1.36@${BUSYBOX.text}` }]);
    assert.deepEqual(images(patched, 'ephemeralContainers'), ['busybox:1.36', `busybox:1.36@${BUSYBOX.text}`]);
    assert.deepEqual(images(patched), ['nginx:1.27']);
    assert.deepEqual(warnings, []);
  });

  it('lets other requests pass unchanged: pod updates, deletes, other resources', async function () {
    const object = pod({ containers: [{ name: 'web', image: 'nginx:1.27' }] });
    const update = createReview(object);
    Object.assign(update.request as Json, { operation: 'UPDATE', oldObject: object, options: { kind: 'UpdateOptions', apiVersion: 'meta.k8s.io/v1' } });
    const del = createReview(object);
    Object.assign(del.request as Json, { operation: 'DELETE', object: null, oldObject: object });
    const binding = createReview(object);
    Object.assign(binding.request as Json, { subResource: 'binding', requestSubResource: 'binding' });
    const deployment = createReview({ kind: 'Deployment', apiVersion: 'apps/v1', metadata: { name: 'web', namespace: 'default' }, spec: {} });
    Object.assign(deployment.request as Json, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' }, resource: { group: 'apps', version: 'v1', resource: 'deployments' } });
    for (const review of [update, del, binding, deployment]) {
      const { patch, warnings } = answerOf(review, await hook.review(review));
      assert.deepEqual(patch, []);
      assert.deepEqual(warnings, []);
    }
    assert.equal(resolver.calls.length, 0);
  });

  it('answers dry-run reviews the same way', async function () {
    const review = createReview(pod({ containers: [{ name: 'web', image: 'nginx:1.27' }] }), { dryRun: true });
    const { pod: patched } = answerOf(review, await hook.review(review));
    assert.deepEqual(images(patched), [`nginx:1.27@${NGINX.text}`]);
  });

  it('passes the pod\'s pull credentials (secrets, service account) for each registry to the resolver', async function () {
    kube.credentials.set('registry.local:5000', [{ kind: 'basic', username: 'robot', password: 'secret' }]);
    const object = pod({ serviceAccountName: 'builder', imagePullSecrets: ['regcred'], containers: [{ name: 'app', image: 'registry.local:5000/team/app:v2' }, { name: 'web', image: 'nginx:1.27' }] });
    const review = createReview(object);
    answerOf(review, await hook.review(review));
    assert.deepEqual(
      kube.credentialCalls.map((c) => [c.registry, c.refs]).sort(),
      [
        ['docker.io', { namespace: 'default', serviceAccountName: 'builder', imagePullSecrets: ['regcred'] }],
        ['registry.local:5000', { namespace: 'default', serviceAccountName: 'builder', imagePullSecrets: ['regcred'] }],
      ],
    );
    const byImage = new Map(resolver.calls.map((c) => [c.ref.original, c.context.credentials]));
    assert.deepEqual(byImage.get('registry.local:5000/team/app:v2'), [{ kind: 'basic', username: 'robot', password: 'secret' }]);
    assert.deepEqual(byImage.get('nginx:1.27'), []);
  });

  it('counts reviews and images in /metrics', async function () {
    const patched = createReview(pod({ containers: [{ name: 'web', image: 'nginx:1.27' }, { name: 'ghost', image: 'ghcr.io/org/nope:1' }] }));
    answerOf(patched, await hook.review(patched));
    const unchanged = createReview(pod({ containers: [{ name: 'web', image: `nginx@${NGINX.text}` }] }));
    answerOf(unchanged, await hook.review(unchanged));
    assert.equal(await readMetric(hook.metricsUrl, 'shoal_webhook_reviews_total', { result: 'patched' }), 1);
    assert.equal(await readMetric(hook.metricsUrl, 'shoal_webhook_reviews_total', { result: 'unchanged' }), 1);
    assert.equal(await readMetric(hook.metricsUrl, 'shoal_webhook_images_total', { resolved_by: 'peer', outcome: 'pinned' }), 1);
    assert.equal(await readMetric(hook.metricsUrl, 'shoal_webhook_images_total', { resolved_by: 'none', outcome: 'unresolved' }), 1);
    assert.equal(await readMetric(hook.metricsUrl, 'shoal_webhook_images_total', { resolved_by: 'none', outcome: 'already_pinned' }), 1);
    assert.equal(await readMetric(hook.metricsUrl, 'shoal_webhook_review_duration_seconds_count', { result: 'patched' }), 1);
  });
});

describe('webhook: annotations choose how to resolve', function () {
  let resolver: FakeResolver;
  let kube: FakeKube;
  let hook: TestWebhook;

  before(async function () {
    resolver = new FakeResolver().set('docker.io/library/nginx:1.27', { digest: NGINX, by: 'upstream' }).set('ghcr.io/org/down:1', { error: 'ghcr.io: 503 Service Unavailable' });
    kube = new FakeKube();
    kube.namespaces.set('peers-ns', { 'shoal.dev/resolve': 'peers' });
    kube.namespaces.set('upstream-ns', { 'shoal.dev/resolve': 'upstream' });
    kube.namespaces.set('frozen-ns', { 'shoal.dev/pin': 'false' });
    hook = await startTestWebhook({ resolver, kube });
  });
  after(() => hook.close());
  beforeEach(() => {
    resolver.calls.length = 0;
  });

  async function modeFor(namespace: string, podAnnotations?: Record<string, string>): Promise<{ mode: string | undefined; pod: Json; warnings: string[] }> {
    const review = createReview(pod({ namespace, annotations: podAnnotations, containers: [{ name: 'web', image: 'nginx:1.27' }] }));
    const answer = answerOf(review, await hook.review(review));
    return { mode: resolver.calls[0]?.context.mode, pod: answer.pod, warnings: answer.warnings };
  }

  const cases: [string, string, Record<string, string> | undefined, string][] = [
    ['no annotation anywhere', 'default', undefined, 'auto'],
    ['pod: resolve upstream', 'default', { 'shoal.dev/resolve': 'upstream' }, 'upstream'],
    ['pod: resolve peers', 'default', { 'shoal.dev/resolve': 'peers' }, 'peers'],
    ['namespace: resolve peers', 'peers-ns', undefined, 'peers'],
    ['namespace: resolve upstream', 'upstream-ns', undefined, 'upstream'],
    ['namespace says peers, pod says upstream: the pod wins', 'peers-ns', { 'shoal.dev/resolve': 'upstream' }, 'upstream'],
    ['namespace says upstream, pod says auto: the pod wins', 'upstream-ns', { 'shoal.dev/resolve': 'auto' }, 'auto'],
    ['namespace unknown to the cache', 'unknown-ns', undefined, 'auto'],
  ];
  for (const [title, namespace, annotations, mode] of cases) {
    it(`${title} → ${mode}`, async function () {
      const got = await modeFor(namespace, annotations);
      assert.equal(got.mode, mode);
      assert.deepEqual(images(got.pod), [`nginx:1.27@${NGINX.text}`]);
      assert.deepEqual(got.warnings, []);
    });
  }

  it('pod: pin "false" → no patch and no resolving', async function () {
    const got = await modeFor('default', { 'shoal.dev/pin': 'false' });
    assert.equal(got.mode, undefined);
    assert.deepEqual(images(got.pod), ['nginx:1.27']);
    assert.equal(annotations(got.pod)!['shoal.dev/original-images'], undefined);
  });

  it('namespace: pin "false" → no patch; a pod there can still ask for pinning with pin "true"', async function () {
    assert.deepEqual(images((await modeFor('frozen-ns')).pod), ['nginx:1.27']);
    assert.deepEqual(images((await modeFor('frozen-ns', { 'shoal.dev/pin': 'true' })).pod), [`nginx:1.27@${NGINX.text}`]);
  });

  it('a value it does not understand: the default applies, with a warning', async function () {
    const got = await modeFor('default', { 'shoal.dev/resolve': 'sideways', 'shoal.dev/pin': 'maybe' });
    assert.equal(got.mode, 'auto');
    assert.deepEqual(got.warnings, [
      'shoal: pod annotation shoal.dev/pin="maybe" is not "true" or "false"; pinning',
      'shoal: pod annotation shoal.dev/resolve="sideways" is not one of auto, upstream, peers; using auto',
    ]);
  });

  it('resolve upstream with the registry down: allowed unchanged, with the reason', async function () {
    const review = createReview(pod({ annotations: { 'shoal.dev/resolve': 'upstream' }, containers: [{ name: 'app', image: 'ghcr.io/org/down:1' }] }));
    const { pod: patched, warnings } = answerOf(review, await hook.review(review));
    assert.equal(resolver.calls[0]?.context.mode, 'upstream');
    assert.deepEqual(images(patched), ['ghcr.io/org/down:1']);
    assert.deepEqual(warnings, ['shoal: container "app" image "ghcr.io/org/down:1" not pinned: ghcr.io: 503 Service Unavailable']);
  });
});

describe('webhook: the resolve budget', function () {
  this.timeout(10_000);
  const BUDGET_MS = 400;
  const MARGIN_MS = 600;
  let resolver: FakeResolver;
  let hook: TestWebhook;

  before(async function () {
    resolver = new FakeResolver()
      .set('docker.io/library/nginx:1.27', { digest: NGINX, by: 'peer' })
      .set('docker.io/library/busybox:1.36', { delayMs: 100, digest: BUSYBOX, by: 'upstream' })
      .set('ghcr.io/org/stuck:1', { hang: true })
      .set('ghcr.io/org/slow:1', { delayMs: 5000, digest: SIDECAR, by: 'upstream' });
    hook = await startTestWebhook({ resolver, resolveBudgetMs: BUDGET_MS });
  });
  after(() => hook.close());

  it('a resolver that hangs: the review answers within the budget, that image unchanged with a warning, the others pinned', async function () {
    const review = createReview(
      pod({
        containers: [
          { name: 'web', image: 'nginx:1.27' },
          { name: 'stuck', image: 'ghcr.io/org/stuck:1' },
          { name: 'slow', image: 'ghcr.io/org/slow:1' },
          { name: 'tools', image: 'busybox:1.36' },
        ],
      }),
    );
    const started = performance.now();
    const res = await hook.review(review);
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= BUDGET_MS - 50 && elapsed < BUDGET_MS + MARGIN_MS, `answered after ${Math.round(elapsed)} ms`);
    const { pod: patched, warnings } = answerOf(review, res);
    assert.deepEqual(images(patched), [`nginx:1.27@${NGINX.text}`, 'ghcr.io/org/stuck:1', 'ghcr.io/org/slow:1', `busybox:1.36@${BUSYBOX.text}`]);
    assert.deepEqual(warnings, [
      'shoal: container "stuck" image "ghcr.io/org/stuck:1" not pinned: not resolved within the 400ms budget',
      'shoal: container "slow" image "ghcr.io/org/slow:1" not pinned: not resolved within the 400ms budget',
    ]);
    assert.equal(await readMetric(hook.metricsUrl, 'shoal_webhook_images_total', { outcome: 'timeout' }), 2);
  });

  it('every image stuck: allowed unchanged within the budget, and the signal the resolver got is aborted', async function () {
    const review = createReview(pod({ containers: [{ name: 'stuck', image: 'ghcr.io/org/stuck:1' }] }));
    resolver.calls.length = 0;
    const started = performance.now();
    const { pod: patched, warnings, patch } = answerOf(review, await hook.review(review));
    assert.ok(performance.now() - started < BUDGET_MS + MARGIN_MS);
    assert.deepEqual(patch, []);
    assert.deepEqual(images(patched), ['ghcr.io/org/stuck:1']);
    assert.equal(warnings.length, 1);
    assert.equal(resolver.calls[0]!.context.signal.aborted, true);
  });
});

describe('webhook: the API server stops waiting', function () {
  it('cuts the resolving of a review whose caller went away, long before the budget', async function () {
    const resolver = new FakeResolver().set('ghcr.io/org/stuck:1', { hang: true });
    const hook = await startTestWebhook({ resolver, resolveBudgetMs: 20_000 });
    try {
      const req = request({ host: '127.0.0.1', port: hook.webhook.port, method: 'POST', path: '/mutate', ca: hook.ca, servername: SERVICE_HOST, agent: false, headers: { 'Content-Type': 'application/json' } });
      req.on('error', () => {});
      req.end(JSON.stringify(createReview(pod({ containers: [{ name: 'stuck', image: 'ghcr.io/org/stuck:1' }] }))));
      const started = performance.now();
      while (resolver.calls.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      req.destroy();
      const signal = resolver.calls[0]!.context.signal;
      while (!signal.aborted && performance.now() - started < 2000) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(signal.aborted, true);
    } finally {
      await hook.close();
    }
  });
});
