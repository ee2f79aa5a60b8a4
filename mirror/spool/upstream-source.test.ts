import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { digestOf } from '../../shared/digest.ts';
import { UpstreamClient } from '../../shared/distribution/client.ts';
import { startServer, type SeenRequest, type TestServer } from '../../shared/distribution/testing.ts';
import { UpstreamError } from '../../shared/distribution/types.ts';
import { ContentMismatchError } from '../../shared/verify.ts';
import { Spool } from './spool.ts';
import { isResumableUpstreamFailure, upstreamSource } from './upstream-source.ts';

const signal = () => AbortSignal.timeout(10_000);

/** A registry serving one blob; `plan` says, per request, how many bytes to send before going silent (undefined: all). */
async function startRegistry(bytes: Buffer, plan: (number | undefined)[]): Promise<TestServer & { gets: () => SeenRequest[] }> {
  let n = 0;
  const server = await startServer((req, res) => {
    const silentAfter = plan[n++];
    const from = Number(/^bytes=([0-9]+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    const headers: Record<string, string | number> = { 'content-length': bytes.length - from };
    if (from > 0) headers['content-range'] = `bytes ${from}-${bytes.length - 1}/${bytes.length}`;
    res.writeHead(from > 0 ? 206 : 200, headers);
    if (silentAfter === undefined) res.end(bytes.subarray(from));
    else res.write(bytes.subarray(from, from + silentAfter));
  });
  return { ...server, gets: () => server.requests };
}

describe('upstreamSource', function () {
  let root: string;
  const closers: { close(): Promise<void> }[] = [];
  beforeEach(async function () {
    root = await mkdtemp(join(tmpdir(), 'shoal-upstream-source-'));
  });
  afterEach(async function () {
    await Promise.all(closers.splice(0).map((c) => c.close()));
    await rm(root, { recursive: true, force: true });
  });

  const bytes = randomBytes(512 * 1024);
  const digest = digestOf(bytes);

  it('takes over the opened blob, then resumes with a Range where the registry went silent', async function () {
    const registry = await startRegistry(bytes, [100_000, 200_000]);
    closers.push(registry);
    const spool = await Spool.open({ dir: join(root, 'spool'), maxBytes: 1 << 20, lingerMs: 0, isResumable: isResumableUpstreamFailure });
    closers.push(spool);
    const client = new UpstreamClient({ plainHttpRegistries: [registry.host], retryBaseDelayMs: 5 });
    const init = { client, registry: registry.host, repository: 'team/app', digest, credentials: [], idleTimeoutMs: 150 };
    const opened = await client.openBlob(registry.host, 'team/app', digest, [], { signal: signal(), idleTimeoutMs: 150 });
    const entry = spool.download(digest, opened.size, upstreamSource({ ...init, opened }))!;
    const chunks: Uint8Array[] = [];
    for await (const chunk of entry.reader()) chunks.push(chunk);
    assert.ok(Buffer.concat(chunks).equals(bytes));
    assert.deepEqual(
      registry.gets().map((r) => r.headers.range ?? 'whole'),
      ['whole', 'bytes=100000-', 'bytes=300000-'],
    );
  });

  it('fails the download when a resumed answer names another size', async function () {
    const other = Buffer.concat([bytes, Buffer.from('!')]);
    let n = 0;
    const registry = await startServer((req, res) => {
      const body = n++ === 0 ? bytes : other;
      const from = Number(/^bytes=([0-9]+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
      res.writeHead(from > 0 ? 206 : 200, { 'content-length': body.length - from, ...(from > 0 ? { 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` } : {}) });
      res.write(body.subarray(from, from + 1000));
      if (from > 0) res.end(body.subarray(from + 1000));
    });
    closers.push(registry);
    const spool = await Spool.open({ dir: join(root, 'spool'), maxBytes: 1 << 20, lingerMs: 0 });
    closers.push(spool);
    const client = new UpstreamClient({ plainHttpRegistries: [registry.host] });
    const opened = await client.openBlob(registry.host, 'team/app', digest, [], { signal: signal(), idleTimeoutMs: 100 });
    const entry = spool.download(digest, opened.size, upstreamSource({ client, registry: registry.host, repository: 'team/app', digest, credentials: [], opened, idleTimeoutMs: 100 }))!;
    assert.equal(await entry.done, 'failed');
    assert.ok(entry.error instanceof ContentMismatchError, String(entry.error));
  });

  it('resumes broken and silent connections only', function () {
    assert.equal(isResumableUpstreamFailure(new UpstreamError('unavailable', 'r', 'reset')), true);
    assert.equal(isResumableUpstreamFailure(new Error('ECONNRESET')), true);
    for (const failure of ['not-found', 'unauthorized', 'rate-limited', 'circuit-open', 'invalid'] as const) {
      assert.equal(isResumableUpstreamFailure(new UpstreamError(failure, 'r', failure)), false, failure);
    }
  });
});
