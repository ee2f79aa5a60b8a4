import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createCertificateAuthority, issueServingCertificate } from '../../webhook/tls/self-signed.ts';
import { released } from '../chunk-pool.ts';
import { Http1Client } from '../http1/client.ts';
import { http1Fetch } from './http1-fetch.ts';
import { describeNetworkError, type FetchFn } from './transport.ts';

const signal = () => AbortSignal.timeout(10_000);
/** As the transport asks: redirects are its to follow. */
const manual = { redirect: 'manual' } as const;

async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await sleep(10);
  assert.ok(done(), `timed out waiting for ${what}`);
}

describe('http1Fetch', function () {
  const BLOB = randomBytes(4 * 1024 * 1024 + 5);
  const answer: RequestListener = (req, res) => {
    if (req.url === '/chunked') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN' }] }));
      return;
    }
    res.writeHead(200, { 'content-length': BLOB.length, 'docker-content-digest': 'sha256:abc' }).end(req.method === 'HEAD' ? undefined : BLOB);
  };
  const servers: Server[] = [];
  let client: Http1Client;
  afterEach(async function () {
    client?.close();
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  });
  const listening = async (server: Server) => {
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as AddressInfo).port;
  };
  const fallbackSpy = () => {
    const calls: string[] = [];
    const fallback: FetchFn = async (input, init) => {
      calls.push(`${init?.method ?? 'GET'} ${input instanceof Request ? input.url : input instanceof URL ? input.href : input}`);
      return fetch(input, init);
    };
    return { calls, fallback };
  };

  async function readReleasing(res: Response): Promise<{ bytes: Buffer; chunks: number; buffers: number }> {
    const parts: Buffer[] = [];
    const buffers = new Set<ArrayBufferLike>();
    const reader: ReadableStreamDefaultReader<Uint8Array> = res.body!.getReader();
    for (let next = await reader.read(); !next.done; next = await reader.read()) {
      buffers.add(next.value.buffer);
      parts.push(Buffer.from(next.value));
      released(next.value);
    }
    return { bytes: Buffer.concat(parts), chunks: parts.length, buffers: buffers.size };
  }

  it('answers a GET as fetch does, the body in a few reused read buffers', async function () {
    const port = await listening(createHttpServer(answer));
    client = new Http1Client({ idleTimeoutMs: 5000 });
    const { calls, fallback } = fallbackSpy();
    const res = await http1Fetch(client, fallback)(`http://127.0.0.1:${port}/v2/x/blobs/sha256:abc?ns=a`, { ...manual, headers: { accept: '*/*' }, signal: signal() });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('docker-content-digest'), 'sha256:abc');
    const read = await readReleasing(res);
    assert.ok(read.bytes.equals(BLOB));
    assert.ok(read.chunks > 8 && read.buffers <= 4, `${read.buffers} buffers for ${read.chunks} chunks`);
    assert.deepEqual(calls, []);
  });

  it('reads over TLS, checking the certificate against the host name', async function () {
    const ca = createCertificateAuthority();
    const cert = issueServingCertificate(ca, { dnsNames: ['localhost'] });
    const port = await listening(createHttpsServer({ cert: cert.cert, key: cert.key }, answer));
    client = new Http1Client({ idleTimeoutMs: 5000, ca: ca.certPem });
    const fetchOver = http1Fetch(client, fallbackSpy().fallback);
    const read = await readReleasing(await fetchOver(`https://localhost:${port}/blob`, { ...manual, signal: signal() }));
    assert.ok(read.bytes.equals(BLOB), 'the bytes, decrypted into pooled buffers');
    assert.ok(read.buffers <= 4, `${read.buffers} buffers for ${read.chunks} chunks`);
    // The certificate names localhost, not 127.0.0.1: the name is checked.
    await assert.rejects(fetchOver(`https://127.0.0.1:${port}/blob`, { ...manual, signal: signal() }), (err: Error) => err instanceof TypeError && /IP: 127.0.0.1 is not in the cert/.test(describeNetworkError(err)));
  });

  it('decodes a chunked answer (a registry error) itself, HEAD has no body, and other methods go to fetch', async function () {
    const port = await listening(createHttpServer(answer));
    client = new Http1Client({ idleTimeoutMs: 5000 });
    const { calls, fallback } = fallbackSpy();
    const fetchOver = http1Fetch(client, fallback);
    const notFound = await fetchOver(`http://127.0.0.1:${port}/chunked`, { ...manual, signal: signal() });
    assert.equal(notFound.status, 404);
    assert.deepEqual(await notFound.json(), { errors: [{ code: 'BLOB_UNKNOWN' }] });
    const head = await fetchOver(`http://127.0.0.1:${port}/blob`, { ...manual, method: 'HEAD', signal: signal() });
    assert.equal(head.headers.get('content-length'), String(BLOB.length));
    assert.equal(head.body, null);
    assert.deepEqual(calls, []);
    await fetchOver(`http://127.0.0.1:${port}/token`, { ...manual, method: 'POST', body: new URLSearchParams({ a: 'b' }), signal: signal() });
    await fetchOver(`http://127.0.0.1:${port}/blob`, { signal: signal() });
    assert.deepEqual(calls, [`POST http://127.0.0.1:${port}/token`, `GET http://127.0.0.1:${port}/blob`], 'redirects followed for the caller: fetch');
  });

  it('hands an answer a Response cannot carry to fetch, dropping its own connection', async function () {
    const closed: string[] = [];
    const raw = createTcpServer((socket) => {
      socket.once('data', (request) => {
        const path = request.toString('latin1').split(' ')[1]!;
        socket.on('close', () => closed.push(path));
        socket.write(`HTTP/1.1 ${path === '/status' ? '799 Odd' : '200 OK'}\r\nX-Odd: a\x00b\r\nContent-Length: 10000000\r\n\r\n${'x'.repeat(1000)}`);
      });
    });
    servers.push(raw as unknown as Server);
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    const port = (raw.address() as AddressInfo).port;
    client = new Http1Client({ idleTimeoutMs: 5000 });
    const fallback: FetchFn = () => Promise.resolve(new Response('from fetch', { status: 200 }));
    for (const path of ['/status', '/header']) {
      const res = await http1Fetch(client, fallback)(`http://127.0.0.1:${port}${path}`, { ...manual, signal: signal() });
      assert.equal(await res.text(), 'from fetch', path);
    }
    await until(() => closed.length === 2, 'both connections dropped');
  });

  it('rejects with the caller’s reason when it gives up before the answer, as fetch does', async function () {
    const port = await listening(createHttpServer(() => {}));
    client = new Http1Client({ idleTimeoutMs: 5000 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('client went away')), 20);
    await assert.rejects(http1Fetch(client, fallbackSpy().fallback)(`http://127.0.0.1:${port}/`, { ...manual, signal: controller.signal }), /^Error: client went away$/);
  });

  it('fails as fetch does when nothing answers, and cancelling a body drops its connection', async function () {
    client = new Http1Client({ idleTimeoutMs: 5000 });
    const fetchOver = http1Fetch(client, fallbackSpy().fallback);
    const closed = await listening(createHttpServer(answer));
    await new Promise((resolve) => servers.pop()!.close(resolve));
    await assert.rejects(fetchOver(`http://127.0.0.1:${closed}/blob`, { ...manual, signal: signal() }), (err: Error) => err instanceof TypeError && /ECONNREFUSED/.test(describeNetworkError(err)));

    const gone = Promise.withResolvers<void>();
    const port = await listening(
      createHttpServer((_req, res) => {
        res.on('close', () => gone.resolve());
        res.writeHead(200, { 'content-length': 1 << 30 });
        res.write(BLOB);
      }),
    );
    const res = await fetchOver(`http://127.0.0.1:${port}/huge`, { ...manual, signal: signal() });
    await res.body!.getReader().cancel();
    await gone.promise;
  });
});
