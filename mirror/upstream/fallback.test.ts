import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { digestOf } from '../../shared/digest.ts';
import { UpstreamClient } from '../../shared/distribution/client.ts';
import { startServer, type TestServer } from '../../shared/distribution/testing.ts';
import { silentLogger } from '../../shared/log.ts';
import { rendezvousPick } from '../../shared/p2p/rendezvous.ts';
import type { Provider } from '../../shared/p2p/router.ts';
import { createMirrorMetrics } from '../metrics.ts';
import { Spool } from '../spool/spool.ts';
import { isResumableUpstreamFailure } from '../spool/upstream-source.ts';
import { ContentMismatchError } from '../../shared/verify.ts';
import { UPSTREAM_FETCH_HEADER, UpstreamFallback, type FallbackBlob } from './fallback.ts';
import { RelayedBlob } from './relay.ts';

const bytes = randomBytes(300 * 1024);
/** A client that stays. */
const live = new AbortController().signal;
const digest = digestOf(bytes);

/** Serves `bytes` from the Range's start; `cutAt`: ends the connection after that many bytes of the first answer. */
function blobServer(cutAt?: number): Promise<TestServer> {
  let first = true;
  return startServer((req, res) => {
    const from = Number(/^bytes=([0-9]+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    res.writeHead(from > 0 ? 206 : 200, {
      'content-length': bytes.length - from,
      ...(from > 0 ? { 'content-range': `bytes ${from}-${bytes.length - 1}/${bytes.length}` } : {}),
    });
    if (first && cutAt !== undefined) {
      first = false;
      res.write(bytes.subarray(0, cutAt), () => setTimeout(() => res.destroy(), 100));
      return;
    }
    res.end(bytes.subarray(from));
  });
}

/** A peer id that wins (or loses) the rendezvous for `digest` against `other`. */
function idThat(wins: boolean, other: string): string {
  for (let i = 0; ; i++) {
    const id = `self-${i}`;
    if ((rendezvousPick([{ peerId: id }, { peerId: other }], digest.text)?.peerId === id) === wins) return id;
  }
}

async function readAll(entry: FallbackBlob | undefined): Promise<Buffer> {
  assert.ok(entry !== undefined, 'an entry');
  const chunks: Uint8Array[] = [];
  for await (const chunk of entry.reader()) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe('UpstreamFallback', function () {
  let root: string;
  const closers: { close(): Promise<void> | void }[] = [];
  beforeEach(async function () {
    root = await mkdtemp(join(tmpdir(), 'shoal-fallback-'));
  });
  afterEach(async function () {
    for (const c of closers.splice(0).reverse()) await c.close();
    await rm(root, { recursive: true, force: true });
  });

  /** Peers that sent wrong bytes, as PeerSource keeps them. */
  const quarantined = new Set<string>();
  const quarantine = { isQuarantined: (id: string) => quarantined.has(id), reportCorrupt: (ids: Iterable<string>) => {
      for (const id of ids) quarantined.add(id);
    },
  };
  afterEach(() => quarantined.clear());

  async function setup(upstream: TestServer, selfId: string, peers: Provider[], ownerPort: number) {
    const spool = await Spool.open({ dir: join(root, 'spool'), maxBytes: 1 << 20, lingerMs: 10_000, isResumable: isResumableUpstreamFailure });
    const metrics = createMirrorMetrics(new Registry());
    const fallback = new UpstreamFallback({
      client: new UpstreamClient({ plainHttpRegistries: [upstream.host], retryBaseDelayMs: 5 }),
      spool,
      selfId,
      peers: { livePeers: () => Promise.resolve(peers) },
      quarantine,
      peerRegistryPort: ownerPort,
      upstreamIdleTimeoutMs: 500,
      peerIdleTimeoutMs: 500,
      logger: silentLogger,
      metrics,
    });
    closers.push(spool, fallback);
    return { fallback, metrics, spool };
  }

  const blobGets = (server: TestServer) => server.requests.filter((r) => r.url.includes('/blobs/'));

  it('downloads a blob once for every request on the node, when the node is its downloader', async function () {
    const upstream = await blobServer();
    closers.push(upstream);
    const { fallback, metrics } = await setup(upstream, 'alone', [], 1);
    const entries = await Promise.all([1, 2, 3].map(() => fallback.blob(upstream.host, 'team/app', digest, false, live)));
    for (const entry of entries) assert.ok((await readAll(entry)).equals(bytes));
    assert.equal(blobGets(upstream).length, 1);
    assert.equal((await metrics.upstreamBytes.get()).values[0]?.value, bytes.length);
  });

  it('relays what the peer that rendezvous hashing picks sends, asked with the upstream-fetch header and the registry, not spooled, not from upstream', async function () {
    const upstream = await blobServer();
    const owner = await blobServer();
    closers.push(upstream, owner);
    const ownerPort = Number(owner.host.split(':')[1]);
    const { fallback, spool } = await setup(upstream, idThat(false, 'owner'), [{ peerId: 'owner', host: '127.0.0.1' }], ownerPort);
    const blob = await fallback.blob(upstream.host, 'team/app', digest, false, live);
    assert.ok(blob instanceof RelayedBlob);
    assert.ok((await readAll(blob)).equals(bytes));
    assert.equal(spool.usedBytes, 0);
    assert.equal(blobGets(upstream).length, 0);
    const [asked] = owner.requests;
    assert.equal(asked?.url, `/v2/team/app/blobs/${digest.text}?ns=${encodeURIComponent(upstream.host)}`);
    assert.equal(asked.headers[UPSTREAM_FETCH_HEADER.toLowerCase()], '1');
  });

  it('downloads itself when asked as the downloader, whoever it thinks owns the blob', async function () {
    const upstream = await blobServer();
    const owner = await blobServer();
    closers.push(upstream, owner);
    const { fallback } = await setup(upstream, idThat(false, 'owner'), [{ peerId: 'owner', host: '127.0.0.1' }], Number(owner.host.split(':')[1]));
    assert.ok((await readAll(await fallback.blob(upstream.host, 'team/app', digest, true, live))).equals(bytes));
    assert.equal(owner.requests.length, 0);
    assert.equal(blobGets(upstream).length, 1);
  });

  it('joins its own download when asked as the downloader meanwhile, and the other way round', async function () {
    const upstream = await blobServer();
    closers.push(upstream);
    const { fallback } = await setup(upstream, 'alone', [], 1);
    const [mine, theirs] = await Promise.all([fallback.blob(upstream.host, 'team/app', digest, false, live), fallback.blob(upstream.host, 'team/app', digest, true, live)]);
    assert.equal(mine, theirs);
    const other = digestOf(Buffer.from('other'));
    const [first, second] = await Promise.all([fallback.blob(upstream.host, 'team/app', other, true, live), fallback.blob(upstream.host, 'team/app', other, false, live)]);
    assert.equal(first, second);
    assert.equal(blobGets(upstream).length, 2);
  });

  it('goes upstream when the downloader is unreachable', async function () {
    const upstream = await blobServer();
    const gone = await blobServer();
    await gone.close();
    closers.push(upstream);
    const { fallback } = await setup(upstream, idThat(false, 'owner'), [{ peerId: 'owner', host: '127.0.0.1' }], Number(gone.host.split(':')[1]));
    assert.ok((await readAll(await fallback.blob(upstream.host, 'team/app', digest, false, live))).equals(bytes));
    assert.equal(blobGets(upstream).length, 1);
  });

  it('resumes from upstream at its offset when the downloader dies mid-blob', async function () {
    const upstream = await blobServer();
    const owner = await blobServer(100_000);
    closers.push(upstream, owner);
    const { fallback } = await setup(upstream, idThat(false, 'owner'), [{ peerId: 'owner', host: '127.0.0.1' }], Number(owner.host.split(':')[1]));
    assert.ok((await readAll(await fallback.blob(upstream.host, 'team/app', digest, false, live))).equals(bytes));
    const gets = blobGets(upstream);
    assert.equal(gets.length, 1);
    assert.match(gets[0]!.headers.range ?? '', /^bytes=[1-9][0-9]*-$/);
  });

  it('fails the relay, last piece held back, when the downloader sends wrong bytes', async function () {
    const upstream = await blobServer();
    const liar = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': bytes.length });
      res.end(randomBytes(bytes.length));
    });
    closers.push(upstream, liar);
    const { fallback } = await setup(upstream, idThat(false, 'owner'), [{ peerId: 'owner', host: '127.0.0.1' }], Number(liar.host.split(':')[1]));
    const blob = await fallback.blob(upstream.host, 'team/app', digest, false, live);
    let received = 0;
    await assert.rejects(async () => {
      for await (const chunk of blob!.reader()) received += chunk.length;
    }, ContentMismatchError);
    assert.ok(received < bytes.length, `${received} bytes passed on`);
    assert.ok(quarantine.isQuarantined('owner'), 'the lying downloader is skipped for a while');
    assert.ok((await readAll(await fallback.blob(upstream.host, 'team/app', digest, false, live))).equals(bytes), 'the next request downloads itself');
    assert.equal(liar.requests.length, 1);
    assert.equal(blobGets(upstream).length, 1);
  });

  it('does not blame a downloader that sent nothing for wrong bytes from upstream', async function () {
    const lyingUpstream = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': bytes.length });
      res.end(randomBytes(bytes.length));
    });
    // Says the size, then drops the connection before the first byte: the relay resumes from upstream at 0.
    const dead = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': bytes.length });
      res.flushHeaders();
      setTimeout(() => res.destroy(), 50);
    });
    closers.push(lyingUpstream, dead);
    const { fallback } = await setup(lyingUpstream, idThat(false, 'owner'), [{ peerId: 'owner', host: '127.0.0.1' }], Number(dead.host.split(':')[1]));
    const blob = await fallback.blob(lyingUpstream.host, 'team/app', digest, false, live);
    assert.ok(blob instanceof RelayedBlob);
    await assert.rejects(async () => {
      for await (const _ of blob.reader());
    }, ContentMismatchError);
    assert.equal(blobGets(lyingUpstream).length, 1, 'the rest came from upstream');
    assert.ok(!quarantine.isQuarantined('owner'), 'the downloader sent no byte of it');
  });

  it('closes upstream\'s first answer when the download cannot begin (no spool file)', async function () {
    const connectionClosed = Promise.withResolvers<true>();
    const upstream = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': bytes.length });
      res.end(bytes);
      res.socket?.once('close', () => connectionClosed.resolve(true));
    });
    closers.push(upstream);
    const { fallback } = await setup(upstream, 'alone', [], 1);
    await rm(join(root, 'spool'), { recursive: true, force: true });
    const entry = await fallback.blob(upstream.host, 'team/app', digest, false, live);
    assert.ok(entry !== undefined && 'done' in entry, 'a download began');
    assert.equal(await entry.done, 'failed');
    // Left open, the kept-alive connection would go only when the server times it out (5 s).
    const closed = await Promise.race([connectionClosed.promise, new Promise<string>((resolve) => setTimeout(() => resolve('still open after 2 s'), 2000))]);
    assert.equal(closed, true);
  });

  it('waits for a downloader silent for longer than one upstream idle timeout (it is asking upstream again)', async function () {
    const upstream = await blobServer();
    // Silent for 1.2 s mid-blob: more than upstream's idle timeout plus the peer's (1 s), less than twice the one plus the other.
    const slow = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': bytes.length });
      res.write(bytes.subarray(0, 1024));
      setTimeout(() => res.end(bytes.subarray(1024)), 1200);
    });
    closers.push(upstream, slow);
    const { fallback } = await setup(upstream, idThat(false, 'owner'), [{ peerId: 'owner', host: '127.0.0.1' }], Number(slow.host.split(':')[1]));
    assert.ok((await readAll(await fallback.blob(upstream.host, 'team/app', digest, false, live))).equals(bytes));
    assert.equal(blobGets(upstream).length, 0, 'all of it from the downloader');
  });

  it('ends a relay waiting on a silent downloader when its client goes away', async function () {
    const upstream = await blobServer();
    const silent = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': bytes.length });
      res.write(bytes.subarray(0, 1024));
    });
    closers.push(upstream, silent);
    const { fallback } = await setup(upstream, idThat(false, 'owner'), [{ peerId: 'owner', host: '127.0.0.1' }], Number(silent.host.split(':')[1]));
    const blob = await fallback.blob(upstream.host, 'team/app', digest, false, live);
    assert.ok(blob instanceof RelayedBlob);
    const reader = blob.reader();
    const reading = (async () => {
      for await (const _ of reader);
    })();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = Date.now();
    reader.close();
    await assert.rejects(reading);
    assert.ok(Date.now() - started < 200, `the read ended ${Date.now() - started} ms after close (the idle timeout is 1500 ms)`);
    assert.equal(blobGets(upstream).length, 0, 'nothing asked of upstream for a client that left');
  });

  it('answers undefined when upstream refuses, and counts the status', async function () {
    const upstream = await startServer((_req, res) => {
      res.writeHead(429, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}');
    });
    closers.push(upstream);
    const { fallback, metrics } = await setup(upstream, 'alone', [], 1);
    assert.equal(await fallback.blob(upstream.host, 'team/app', digest, false, live), undefined);
    const counted = (await metrics.upstreamRequests.get()).values.find((v) => v.labels.code === '429');
    assert.equal(counted?.value, 1);
  });
});
