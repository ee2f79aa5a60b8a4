import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { close, listen } from '../http-listen.ts';
import { isPeerRequest, PEER_REQUEST_HEADER, PeerClient, PeerIdleError } from './peer-client.ts';

describe('PeerClient', () => {
  const IDLE_MS = 200;
  const WHOLE = Buffer.alloc(4 * 1024 * 1024, 7);
  let server: Server;
  let client: PeerClient;
  const seen: Record<string, string | string[] | undefined>[] = [];
  const provider = { peerId: 'p', host: '127.0.0.1' };
  const signal = () => AbortSignal.timeout(10_000);

  before(async () => {
    server = createServer((req, res) => {
      seen.push(req.headers);
      switch (req.url) {
        case '/whole':
          res.end(WHOLE);
          return;
        case '/stall-after-some':
          res.writeHead(200, { 'Content-Length': 100 });
          res.write(Buffer.alloc(10, 1));
          return;
        case '/no-response':
          return;
        default:
          res.writeHead(404, { 'Content-Length': 0 });
          res.end();
      }
    });
    const port = await listen(server, { host: '127.0.0.1', port: 0 });
    client = new PeerClient({ port, idleTimeoutMs: IDLE_MS });
  });
  after(async () => {
    client.close();
    await close(server, 0);
  });

  it(`sends ${PEER_REQUEST_HEADER} on every request`, async () => {
    const res = await client.request(provider, { method: 'GET', path: '/missing', signal: signal() });
    res.discard();
    assert.equal(res.status, 404);
    assert.equal(seen.at(-1)?.[PEER_REQUEST_HEADER.toLowerCase()], '1');
    assert.equal(isPeerRequest(seen.at(-1)!), true);
    assert.equal(isPeerRequest({ 'user-agent': 'containerd/1.6.20~ds1' }), false);
  });

  it('does not count time the consumer spends elsewhere as the peer being idle', async () => {
    const res = await client.request(provider, { method: 'GET', path: '/whole', signal: signal() });
    const chunks: Uint8Array[] = [];
    for await (const chunk of res.body) {
      // The socket sits paused under backpressure meanwhile: a socket-level timeout would fire here.
      if (chunks.length === 0) await sleep(IDLE_MS * 2);
      chunks.push(chunk);
    }
    assert.deepEqual(Buffer.concat(chunks), WHOLE);
  });

  it('cuts a body that stops arriving after the idle timeout', async () => {
    const res = await client.request(provider, { method: 'GET', path: '/stall-after-some', signal: signal() });
    const started = Date.now();
    let got = 0;
    await assert.rejects(
      (async () => {
        for await (const chunk of res.body) got += chunk.length;
      })(),
      PeerIdleError,
    );
    const elapsed = Date.now() - started;
    assert.equal(got, 10);
    assert.ok(elapsed >= IDLE_MS - 5 && elapsed < IDLE_MS + 500, `cut after ${elapsed} ms`);
  });

  it('gives up on a peer that accepts and never answers', async () => {
    const started = Date.now();
    await assert.rejects(client.request(provider, { method: 'GET', path: '/no-response', signal: signal() }), PeerIdleError);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= IDLE_MS - 5 && elapsed < IDLE_MS + 500, `gave up after ${elapsed} ms`);
  });

  it('fails at once on a port where nothing listens', async () => {
    const spare = createServer();
    const port = await listen(spare, { host: '127.0.0.1', port: 0 });
    await close(spare, 0);
    const closed = new PeerClient({ port, idleTimeoutMs: 10_000 });
    const started = Date.now();
    await assert.rejects(closed.request(provider, { method: 'GET', path: '/x', signal: signal() }), (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED');
    assert.ok(Date.now() - started < 1000);
    closed.close();
  });

  it('stops when its signal aborts', async () => {
    const abort = new AbortController();
    const pending = client.request(provider, { method: 'GET', path: '/no-response', signal: abort.signal });
    setTimeout(() => abort.abort(), 20);
    await assert.rejects(pending, { name: 'AbortError' });
  });
});
