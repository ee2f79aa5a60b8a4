import assert from 'node:assert/strict';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import type { Stream } from '@libp2p/interface';
import { kadDHT } from '@libp2p/kad-dht';
import { ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import { DHT_PROTOCOL, type DhtRouter } from './dht-router.ts';
import { RECORD_SYNC_PROTOCOL } from './record-sync.ts';
import { ANSWER_HEAD_BYTES, KeyDigests, MESSAGE_HEAD_BYTES, PUSH_ACK, decodeMessage, encodeAnswer, encodePush, messageBytes, peerHash, type Message } from './record-sync-wire.ts';
import { readAll, sendAll } from './stream-bytes.ts';
import { keyDigest } from './cid.ts';
import { peerIdFromString } from '@libp2p/peer-id';
import { reachablePeerInfo } from './addresses.ts';
import { hostPort, lookupAll, TestNetwork, until, type TestNodeInit } from './testing.ts';

const keys = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `sha256:${prefix}${i.toString(16).padStart(64 - prefix.length, '0')}`);

describe('records from every peer in a network smaller than K', function () {
  this.timeout(20_000);
  const net = new TestNetwork();
  const raw: Libp2p[] = [];
  afterEach(async () => {
    for (const node of raw.splice(0)) await node.stop();
    await net.close();
  });

  /** n nodes on 127.0.0.(base+i), each bootstrapped to every one before it. */
  async function mesh(n: number, base: number, init: TestNodeInit = {}): Promise<DhtRouter[]> {
    const nodes: DhtRouter[] = [];
    for (let i = 0; i < n; i++) nodes.push(await net.start(`127.0.0.${base + i}`, { ...init, bootstrapPeers: nodes.map(hostPort) }));
    await until('every node knows its peers', () => nodes.every((node) => node.stats().peers >= Math.min(n - 1, init.kBucketSize ?? n)));
    return nodes;
  }

  /**
   * A DHT server that is not a DhtRouter: it speaks kad-dht on Shoal's protocol,
   * and answers record requests with `answer` (none: it does not speak the protocol, as an older mirror).
   */
  async function rawPeer(ip: string, join: DhtRouter, answer?: (stream: Stream) => Promise<void>, handle?: (stream: Stream) => Promise<void>): Promise<Libp2p> {
    const node = await createLibp2p({
      addresses: { listen: [`/ip4/${ip}/tcp/0`] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify(), ping: ping(), dht: kadDHT({ protocol: DHT_PROTOCOL, clientMode: false, peerInfoMapper: reachablePeerInfo, allowQueryWithZeroPeers: true }) },
    });
    raw.push(node);
    if (handle !== undefined) await node.handle(RECORD_SYNC_PROTOCOL, (stream) => handle(stream).catch((err: unknown) => stream.abort(err as Error)));
    if (answer !== undefined) await node.handle(RECORD_SYNC_PROTOCOL, async (stream) => {
      for await (const _ of stream) break;
      await answer(stream);
    });
    await node.dial(multiaddr(join.addresses()[0]));
    return node;
  }

  /**
   * A raw peer that speaks the protocol as told: it answers pulls with `table()` as its
   * routing table and no keys, and hands each push to `onPush` (which may throw to refuse it).
   */
  async function protocolPeer(ip: string, join: DhtRouter, table: () => string[], onPush: (message: Extract<Message, { kind: 'push' }>) => void = () => {}): Promise<Libp2p> {
    const none = new KeyDigests();
    return rawPeer(ip, join, undefined, async (stream) => {
      const signal = AbortSignal.timeout(5_000);
      const message = decodeMessage(await readAll(stream, MESSAGE_HEAD_BYTES, messageBytes, signal));
      if (message.kind === 'push') {
        onPush(message);
        await sendAll(stream, [PUSH_ACK], signal);
      } else {
        await sendAll(stream, encodeAnswer(none, message.fingerprint, { peers: table(), version: Date.now() }), signal);
      }
      await stream.close();
    });
  }

  it('gives a restarted node every peer\'s records, so that its hits and misses ask nobody', async () => {
    const dataDir = await net.tempDir();
    const a = await net.start('127.0.0.161');
    const b = await net.start('127.0.0.162', { bootstrapPeers: [hostPort(a)] });
    const c = await net.start('127.0.0.163', { dataDir, bootstrapPeers: [hostPort(a)] });
    const nodes = [a, b, c, await net.start('127.0.0.164', { bootstrapPeers: [hostPort(a)] })];
    const many = keys('a', 200);
    a.advertise(many);
    b.advertise(['sha256:from-b']);
    await until('every node holds every record', () => nodes.every((node) => node.stats().recordsComplete), 8_000);

    // c comes back with the same identity and an empty record store; nobody provides to it again.
    await c.close();
    const back = await net.start('127.0.0.163', { dataDir, bootstrapPeers: [hostPort(a)] });
    assert.equal(back.peerId, c.peerId);
    await until('the restarted node holds every record', () => back.stats().recordsComplete, 8_000);
    assert.equal(back.stats().syncedKeys, 201);
    assert.equal(a.stats().providesSucceeded, 200, 'no provide was sent again');

    const before = back.stats();
    assert.deepEqual(await lookupAll(back, many[123]!, 500), [{ peerId: a.peerId, host: '127.0.0.161' }]);
    assert.deepEqual(await lookupAll(back, 'sha256:from-b', 500), [{ peerId: b.peerId, host: '127.0.0.162' }]);
    const started = Date.now();
    assert.deepEqual(await lookupAll(back, 'sha256:nobody-has-this', 5_000), []);
    assert.ok(Date.now() - started < 100, `the miss took ${Date.now() - started} ms`);
    const after = back.stats();
    assert.equal(after.lookupsLocal - before.lookupsLocal, 3);
    assert.equal(after.lookupsNetwork, before.lookupsNetwork, 'no lookup asked the network');
  });

  it('pushes a burst of new keys to every peer in a few streams, where kad-dht would send an ADD_PROVIDER per key and peer', async () => {
    const nodes = await mesh(4, 185);
    await until('every node can push', () => nodes.every((node) => node.stats().recordsComplete), 8_000);
    const [a, ...others] = nodes;
    const burst = keys('d', 300);
    a!.advertise(burst);
    await a!.providesIdle();
    const stats = a!.stats();
    assert.equal(stats.providesSucceeded, 300);
    assert.equal(stats.providesFromTable, 0, 'no kad-dht provide');
    assert.equal(stats.keysPushed, 900, JSON.stringify(stats));
    assert.ok(stats.pushesSucceeded <= 9, `${stats.pushesSucceeded} pushes`);
    for (const node of others) {
      assert.equal(node.stats().syncedKeys, 300);
      const before = node.stats().lookupsNetwork;
      for (const key of [burst[0]!, burst[299]!]) assert.deepEqual(await lookupAll(node, key, 300), [{ peerId: a!.peerId, host: '127.0.0.185' }]);
      assert.equal(node.stats().lookupsNetwork, before);
    }
  });

  it('stores a peer\'s push, and nothing of a push whose length is not what it says', async () => {
    const [a] = await mesh(1, 190);
    const pusher = await rawPeer('127.0.0.191', a!);
    const send = async (message: Uint8Array): Promise<Uint8Array> => {
      const stream = await pusher.dialProtocol(peerIdFromString(a!.peerId), RECORD_SYNC_PROTOCOL);
      const answer: Uint8Array[] = [];
      const reading = (async () => {
        for await (const chunk of stream) answer.push(chunk instanceof Uint8Array ? chunk : chunk.subarray());
      })();
      stream.send(message);
      await stream.close();
      await reading.catch(() => {});
      return Buffer.concat(answer);
    };
    const digests = keys('e', 3).map(keyDigest);
    const short = encodePush({ peers: [], version: 1 }, new Uint8Array(32), digests).subarray(0, MESSAGE_HEAD_BYTES + 40 + 2 * 32);
    assert.deepEqual([...(await send(short))], []);
    const long = Buffer.concat([encodePush({ peers: [], version: 1 }, new Uint8Array(32), digests), new Uint8Array(32)]);
    assert.deepEqual([...(await send(long))], []);
    assert.equal(a!.stats().syncedKeys, 0);
    assert.deepEqual([...(await send(encodePush({ peers: [], version: 1 }, new Uint8Array(32), digests)))], [...PUSH_ACK]);
    assert.equal(a!.stats().syncedKeys, 3);
    assert.deepEqual(await lookupAll(a!, keys('e', 3)[1]!, 300), [{ peerId: pusher.peerId.toString(), host: '127.0.0.191' }]);
  });

  describe('trusts its records only when every peer\'s table holds this node and nobody it does not know', () => {
    for (const [what, table, complete] of [
      ['lists this node', (self: string) => [self], true],
      ['does not list this node', () => [], false],
      ['lists a peer this node does not know', (self: string) => [self, peerHash('12D3KooWSomebodyElse')], false],
    ] as const) {
      it(`a peer whose table ${what}: ${complete ? 'complete' : 'asks the network'}`, async () => {
        const [a] = await mesh(1, 200, { recordSyncIntervalMs: 300 });
        await protocolPeer('127.0.0.201', a!, () => table(peerHash(a!.peerId)));
        await until('a asked the peer twice', () => a!.stats().syncsSucceeded >= 2, 8_000);
        await until('a looked around', () => a!.stats().providesCanUseTable, 8_000);
        assert.equal(a!.stats().recordsComplete, complete);
        await lookupAll(a!, 'sha256:anything', 300);
        assert.equal(a!.stats().lookupsLocal, complete ? 1 : 0);
      });
    }
  });

  it('takes a peer\'s table from its pushes too, the newest version winning', async () => {
    const [a] = await mesh(1, 210);
    const answered = Date.now();
    const peer = await protocolPeer('127.0.0.211', a!, () => [peerHash(a!.peerId)]);
    await until('complete', () => a!.stats().recordsComplete, 8_000);
    const push = async (version: number, peers: string[]): Promise<void> => {
      const stream = await peer.dialProtocol(peerIdFromString(a!.peerId), RECORD_SYNC_PROTOCOL);
      const reading = readAll(stream, 1, () => 1, AbortSignal.timeout(5_000));
      stream.send(encodePush({ peers, version }, new Uint8Array(32), []));
      await stream.close();
      assert.deepEqual([...(await reading)], [...PUSH_ACK]);
    };
    await push(answered - 1_000, []);
    assert.equal(a!.stats().recordsComplete, true, 'an older table changes nothing');
    await push(Date.now() + 1_000, []);
    assert.equal(a!.stats().recordsComplete, false, 'a newer table without this node: ask the network');
  });

  it('pushes its table to every peer when it changes, keys or not', async () => {
    const [a, b] = await mesh(2, 215);
    await until('complete', () => a!.stats().recordsComplete && b!.stats().recordsComplete, 8_000);
    const before = a!.stats().pushesSucceeded;
    assert.equal(a!.stats().keysPushed, 0);
    const c = await net.start('127.0.0.217', { bootstrapPeers: [hostPort(b!)] });
    await until('a knows c', () => a!.stats().peers === 2, 8_000);
    await until('a told b and c of its new table', () => a!.stats().pushesSucceeded >= before + 2, 8_000);
    assert.equal(a!.stats().keysPushed, 0, 'a table, no keys');
    await until('all three complete again', () => [a!, b!, c].every((n) => n.stats().recordsComplete), 8_000);
  });

  it('pushes again to a peer that refused a push, and never pushes a key withdrawn before it went', async () => {
    const [a] = await mesh(1, 205);
    const got: string[] = [];
    let refuse = 1;
    await protocolPeer('127.0.0.206', a!, () => [peerHash(a!.peerId)], (message) => {
      if (message.digests.length > 0 && refuse-- > 0) throw new Error('refused once');
      for (const digest of message.digests) got.push(Buffer.from(digest).toString('hex'));
    });
    await until('a can push', () => a!.stats().recordsComplete, 8_000);
    a!.advertise(['sha256:kept', 'sha256:gone']);
    // Withdrawn while the refused push waits to be sent again.
    await until('the first push was refused', () => a!.stats().pushesFailed === 1, 8_000);
    a!.withdraw(['sha256:gone']);
    await until('the peer stored the push', () => got.length > 0, 8_000);
    assert.deepEqual(got, [Buffer.from(keyDigest('sha256:kept')).toString('hex')]);
    assert.equal(a!.stats().pushesFailed, 1);
    assert.equal(a!.stats().providesFromTable, 0, 'pushed, not provided through kad-dht');
  });

  it('takes a peer\'s keys once: pushed keys keep its copy current, and a withdrawal makes the next pull a full one', async () => {
    const [a, b] = await mesh(2, 165, { recordSyncIntervalMs: 1_000 });
    await until('both complete', () => a!.stats().recordsComplete && b!.stats().recordsComplete, 8_000);
    a!.advertise(keys('b', 30));
    await a!.providesIdle();
    // 60 only if one of b's pulls (one a second) came between the advertise and the push, and took them too.
    const pushed = b!.stats().syncedKeys;
    assert.ok(pushed === 30 || pushed === 60, `${pushed} keys`);
    const checks = b!.stats().syncsSucceeded;
    await until('b pulled twice more', () => b!.stats().syncsSucceeded >= checks + 2, 8_000);
    assert.equal(b!.stats().syncedKeys, pushed, 'the pulls after the push were headers');
    a!.withdraw(['sha256:' + 'b'.padEnd(64, '0')]);
    a!.advertise(['sha256:new']);
    await until('b took the new key, then the whole changed set', () => b!.stats().syncedKeys === pushed + 1 + 30, 8_000);
    const again = b!.stats().syncsSucceeded;
    await until('b pulled twice more', () => b!.stats().syncsSucceeded >= again + 2, 8_000);
    assert.equal(b!.stats().syncedKeys, pushed + 31, 'an unchanged set is not sent again');
  });

  it('asks the network from K peers on', async () => {
    const nodes = await mesh(4, 170, { kBucketSize: 2 });
    nodes[0]!.advertise(['sha256:far']);
    await nodes[0]!.providesIdle();
    for (const node of nodes.slice(1)) {
      await until('found', async () => (await lookupAll(node, 'sha256:far', 500)).length === 1);
      assert.equal(node.stats().recordsComplete, false);
      assert.ok(node.stats().lookupsNetwork > 0);
      assert.equal(node.stats().lookupsLocal, 0);
    }
  });

  it('asks the network while a peer in the table does not speak the protocol', async () => {
    const [a, b] = await mesh(2, 175);
    await until('complete with two', () => a!.stats().recordsComplete && b!.stats().recordsComplete, 8_000);
    await rawPeer('127.0.0.177', a!);
    await until('a and b know the older peer', () => a!.stats().peers === 2 && b!.stats().peers === 2, 8_000);
    await new Promise((resolve) => setTimeout(resolve, 700));
    assert.equal(a!.stats().recordsComplete, false);
    assert.equal(b!.stats().recordsComplete, false);
    b!.advertise(['sha256:still-found']);
    await b!.providesIdle();
    assert.equal(b!.stats().providesFromTable, 1, 'the older peer takes no push: kad-dht provides');
    assert.equal(b!.stats().keysPushed, 1, 'and a, which speaks the protocol, also gets a push, retried if need be');
    assert.equal((await lookupAll(a!, 'sha256:still-found', 500)).length, 1);
    assert.ok(a!.stats().lookupsNetwork > 0);
  });

  for (const [what, answer] of [
    ['announces more keys than it sends', (digests: KeyDigests) => { const [header, body] = encodeAnswer(digests, new Uint8Array(32), { peers: [], version: 1 }); return [header!, body!.subarray(32)]; }],
    ['sends keys that do not match its fingerprint', (digests: KeyDigests) => { const [header, body] = encodeAnswer(digests, new Uint8Array(32), { peers: [], version: 1 }); body![0]! ^= 1; return [header!, body!]; }],
    ['sends more bytes than its header says', (digests: KeyDigests) => [...encodeAnswer(digests, new Uint8Array(32), { peers: [], version: 1 }), new Uint8Array(5)]],
    ['answers with a truncated header', () => [new Uint8Array(ANSWER_HEAD_BYTES - 1)]],
    ['announces more keys than accepted', (digests: KeyDigests) => { const [header] = encodeAnswer(digests, new Uint8Array(32), { peers: [], version: 1 }); new DataView(header!.buffer).setUint32(4, 2_000_000); return [header!]; }],
  ] as const) {
    it(`stores nothing from a peer that ${what}, and asks the network meanwhile`, async () => {
      const [a] = await mesh(1, 180);
      const lies = new KeyDigests();
      for (const key of keys('c', 3)) lies.add(key);
      const liar = await rawPeer('127.0.0.181', a!, async (stream) => {
        for (const part of answer(lies)) stream.send(part);
        await stream.close();
      });
      await until('the liar is in the table', () => a!.stats().peers === 1);
      await until('a asked it', () => a!.stats().syncsFailed > 0, 8_000);
      assert.equal(a!.stats().syncedKeys, 0);
      assert.equal(a!.stats().recordsComplete, false);
      assert.deepEqual(await lookupAll(a!, keys('c', 3)[0]!, 300), []);
      assert.ok(a!.stats().lookupsNetwork > 0);
      assert.equal(liar.status, 'started');
    });
  }
});
