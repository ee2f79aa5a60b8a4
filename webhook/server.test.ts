/** The process's servers: ops endpoints, readiness, caBundle publication, what the log says at start. */
import assert from 'node:assert/strict';
import { createLogger } from '../shared/log.ts';
import { FakeKube, FakeResolver, startTestWebhook } from './testing.ts';
import type { CaBundlePublisher } from './server.ts';

/** Fails the first `failures` calls, then succeeds; records each call. */
class FlakyPublisher implements CaBundlePublisher {
  readonly calls: string[] = [];
  failures: number;
  constructor(failures: number) {
    this.failures = failures;
  }
  publish(caPem: string): Promise<void> {
    this.calls.push(caPem);
    if (this.failures-- > 0) return Promise.reject(new Error('mutatingwebhookconfigurations "shoal" is forbidden'));
    return Promise.resolve();
  }
}

async function status(url: string): Promise<number> {
  return (await fetch(url)).status;
}

async function until(what: string, check: () => Promise<boolean> | boolean, withinMs = 3000): Promise<void> {
  const started = performance.now();
  while (performance.now() - started < withinMs) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`${what}: not within ${withinMs} ms`);
}

describe('webhook server', function () {
  this.timeout(20_000);

  it('serves /healthz, /readyz and /metrics on the ops address', async function () {
    const hook = await startTestWebhook({ resolver: new FakeResolver(), kube: new FakeKube() });
    try {
      assert.equal(await status(`${hook.metricsUrl}/healthz`), 200);
      assert.equal(await status(`${hook.metricsUrl}/readyz`), 200);
      const metrics = await (await fetch(`${hook.metricsUrl}/metrics`)).text();
      for (const name of ['shoal_webhook_reviews_total', 'shoal_webhook_images_total', 'shoal_webhook_review_duration_seconds', 'shoal_process_cpu_seconds_total']) {
        assert.match(metrics, new RegExp(`^# TYPE ${name} `, 'm'), name);
      }
    } finally {
      await hook.close();
    }
  });

  it('is ready only once the caBundle is published, retrying until it is, and publishes it again now and then', async function () {
    const publisher = new FlakyPublisher(2);
    const logs: string[] = [];
    const hook = await startTestWebhook({
      resolver: new FakeResolver(),
      kube: new FakeKube(),
      caBundlePublisher: publisher,
      logger: createLogger({ write: (line) => logs.push(line) }),
      extra: { caBundleRetryMs: 100, caBundleRefreshMs: 400 },
    });
    try {
      assert.equal(await status(`${hook.metricsUrl}/readyz`), 503);
      assert.equal(await status(`${hook.metricsUrl}/healthz`), 200);
      await until('ready', async () => (await status(`${hook.metricsUrl}/readyz`)) === 200);
      assert.equal(publisher.calls.length, 3);
      assert.ok(publisher.calls.every((pem) => pem === hook.ca));
      assert.match(hook.ca, /^-----BEGIN CERTIFICATE-----/);
      assert.equal(logs.filter((l) => l.includes('caBundle not published; retrying')).length, 2);
      assert.ok(logs.some((l) => l.includes('"msg":"caBundle published"')));
      await until('published again', () => publisher.calls.length >= 4);
    } finally {
      await hook.close();
    }
    const calls = publisher.calls.length;
    await new Promise((resolve) => setTimeout(resolve, 800));
    assert.equal(publisher.calls.length, calls, 'no publishing after close');
  });

  it('without a Kubernetes API: serves, logs the CA to put into the caBundle by hand, and says what it cannot do', async function () {
    const logs: string[] = [];
    const hook = await startTestWebhook({ resolver: new FakeResolver(), logger: createLogger({ write: (line) => logs.push(line) }) });
    try {
      assert.equal(await status(`${hook.metricsUrl}/readyz`), 200);
      const records = logs.map((l) => JSON.parse(l) as Record<string, unknown>);
      const ca = records.find((r) => String(r.msg).startsWith('caBundle not published'));
      assert.ok(ca);
      assert.equal(Buffer.from(ca.caBundle as string, 'base64').toString(), hook.ca);
      assert.ok(records.some((r) => r.level === 'info' && String(r.msg).startsWith('no Kubernetes API: only pod annotations are read')));
      assert.ok(records.some((r) => r.msg === 'webhook serving' && r.tls === 'self-signed' && r.kubernetes === false));
    } finally {
      await hook.close();
    }
  });

  it('the parts\' readiness counts too', async function () {
    let partsReady = false;
    const hook = await startTestWebhook({ resolver: new FakeResolver(), extra: { ready: () => partsReady } });
    try {
      assert.equal(await status(`${hook.metricsUrl}/readyz`), 503);
      partsReady = true;
      assert.equal(await status(`${hook.metricsUrl}/readyz`), 200);
    } finally {
      await hook.close();
    }
  });
});
