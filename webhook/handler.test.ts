/**
 * Requests the webhook cannot read: each a 400 with a Status that says why,
 * and the server answers the next good review as if nothing happened.
 */
import assert from 'node:assert/strict';
import { readMetric } from '../hack/harness/http.ts';
import { createReview, fakeDigest, FakeResolver, pod, startTestWebhook, type HttpsAnswer, type TestWebhook } from './testing.ts';

type Json = Record<string, unknown>;

const NGINX = fakeDigest('nginx:1.27');
const JSON_HEADERS = { 'Content-Type': 'application/json' };

function goodReview(): Json {
  return createReview(pod({ containers: [{ name: 'web', image: 'nginx:1.27' }] }));
}

function assertRefused(res: HttpsAnswer, status: number, reason: string, message: RegExp): void {
  assert.equal(res.status, status, res.body.toString());
  const body = res.json();
  assert.deepEqual({ ...body, message: undefined }, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', reason, code: status, message: undefined });
  assert.match(body.message as string, message);
}

describe('webhook: requests it cannot read', function () {
  this.timeout(30_000);
  let hook: TestWebhook;

  before(async function () {
    hook = await startTestWebhook({ resolver: new FakeResolver().set('docker.io/library/nginx:1.27', { digest: NGINX, by: 'peer' }) });
  });
  after(() => hook.close());

  async function stillServes(): Promise<void> {
    const review = goodReview();
    const res = await hook.review(review);
    assert.equal(res.status, 200);
    const response = res.json().response as Json;
    assert.equal(response.uid, (review.request as Json).uid);
    assert.equal(response.patchType, 'JSONPatch');
  }

  const withRequest = (change: (request: Json) => void): string => {
    const review = goodReview();
    change(review.request as Json);
    return JSON.stringify(review);
  };

  const bad: [string, string, Record<string, string>, string, RegExp][] = [
    ['not JSON', 'hello, webhook', JSON_HEADERS, 'BadRequest', /^request body is not a JSON object: /],
    ['truncated JSON', JSON.stringify(goodReview()).slice(0, 200), JSON_HEADERS, 'BadRequest', /^request body is not a JSON object: /],
    ['a JSON string', '"AdmissionReview"', JSON_HEADERS, 'BadRequest', /^request body is not a JSON object: /],
    ['a JSON array', '[]', JSON_HEADERS, 'BadRequest', /^not an AdmissionReview: the body must be an AdmissionReview object, got an array$/],
    ['an empty body', '', JSON_HEADERS, 'BadRequest', /^request body is empty: POST an AdmissionReview$/],
    ['wrong kind', JSON.stringify({ ...goodReview(), kind: 'Pod' }), JSON_HEADERS, 'BadRequest', /^not an AdmissionReview: kind must be "AdmissionReview", got "Pod"$/],
    [
      'v1beta1',
      JSON.stringify({ ...goodReview(), apiVersion: 'admission.k8s.io/v1beta1' }),
      JSON_HEADERS,
      'BadRequest',
      /^not an AdmissionReview: apiVersion must be "admission\.k8s\.io\/v1", got "admission\.k8s\.io\/v1beta1" \(set admissionReviewVersions: \["v1"\]/,
    ],
    ['no request', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }), JSON_HEADERS, 'BadRequest', /^not an AdmissionReview: request must be an object, got nothing$/],
    ['no uid', withRequest((r) => delete r.uid), JSON_HEADERS, 'BadRequest', /^not an AdmissionReview: request\.uid must be a string, got nothing$/],
    ['empty uid', withRequest((r) => (r.uid = '')), JSON_HEADERS, 'BadRequest', /^not an AdmissionReview: request\.uid must not be empty$/],
    ['no resource', withRequest((r) => delete r.resource), JSON_HEADERS, 'BadRequest', /^not an AdmissionReview: request\.resource must be an object \{group, version, resource\}, got nothing$/],
    ['unknown operation', withRequest((r) => (r.operation = 'PATCH')), JSON_HEADERS, 'BadRequest', /^not an AdmissionReview: request\.operation must be one of CREATE, UPDATE, DELETE, CONNECT, got "PATCH"$/],
    ['a pod without spec', withRequest((r) => delete (r.object as Json).spec), JSON_HEADERS, 'BadRequest', /^not an AdmissionReview for a pod: request\.object\.spec must be an object, got nothing$/],
    [
      'containers not a list',
      withRequest((r) => (((r.object as Json).spec as Json).containers = { web: 'nginx' })),
      JSON_HEADERS,
      'BadRequest',
      /^not an AdmissionReview for a pod: request\.object\.spec\.containers must be an array, got an object$/,
    ],
    ['Content-Type text/plain', JSON.stringify(goodReview()), { 'Content-Type': 'text/plain' }, 'UnsupportedMediaType', /^Content-Type must be application\/json, got "text\/plain"$/],
    ['no Content-Type', JSON.stringify(goodReview()), {}, 'UnsupportedMediaType', /^Content-Type must be application\/json, got none$/],
    ['gzip', JSON.stringify(goodReview()), { ...JSON_HEADERS, 'Content-Encoding': 'gzip' }, 'UnsupportedMediaType', /^Content-Encoding is not supported/],
  ];
  for (const [title, body, headers, reason, message] of bad) {
    it(`${title}: 400 ${reason}, then a good review succeeds`, async function () {
      assertRefused(await hook.request({ body, headers }), 400, reason, message);
      await stillServes();
    });
  }

  it('a 10 MiB body: 400 RequestEntityTooLarge, then a good review succeeds', async function () {
    const review = goodReview();
    ((review.request as Json).object as Json).metadata = { name: 'huge', namespace: 'default', annotations: { filler: 'x'.repeat(10 * 1024 * 1024) } };
    assertRefused(await hook.request({ body: JSON.stringify(review), headers: JSON_HEADERS }), 400, 'RequestEntityTooLarge', /^request body is larger than the 4 MiB limit$/);
    await stillServes();
  });

  it('a body just under the limit is read', async function () {
    const review = goodReview();
    ((review.request as Json).object as Json).metadata = { name: 'big', namespace: 'default', annotations: { filler: 'x'.repeat(3 * 1024 * 1024) } };
    const res = await hook.request({ body: JSON.stringify(review), headers: JSON_HEADERS });
    assert.equal(res.status, 200);
  });

  it('other methods and paths: 405 and 404, as Status too', async function () {
    assertRefused(await hook.request({ method: 'GET' }), 405, 'MethodNotAllowed', /^GET is not allowed: POST an AdmissionReview$/);
    assertRefused(await hook.request({ method: 'POST', path: '/validate', body: '{}', headers: JSON_HEADERS }), 404, 'NotFound', /^no such endpoint \/validate: AdmissionReviews go to POST \/mutate$/);
    await stillServes();
  });

  it('counts refused requests as errors', async function () {
    const before = await readMetric(hook.metricsUrl, 'shoal_webhook_reviews_total', { result: 'error' });
    await hook.request({ body: 'nope', headers: JSON_HEADERS });
    assert.equal(await readMetric(hook.metricsUrl, 'shoal_webhook_reviews_total', { result: 'error' }), before + 1);
  });
});
