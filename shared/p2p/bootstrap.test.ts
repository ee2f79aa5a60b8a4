import assert from 'node:assert/strict';
import { parseBootstrapPeer, resolveHost, systemResolver } from './bootstrap.ts';
import { freePort, lookupAll, TestDnsServer, TestNetwork, until } from './testing.ts';

const PEER_ID = '12D3KooWJNf8JSsXon8KaLTHq6sEbRZPPSWQtKAvUehqtBvXTBnR';

describe('parseBootstrapPeer', () => {
  for (const [raw, want] of [
    ['10.0.0.5:5001', { host: '10.0.0.5', port: 5001 }],
    ['[fd00::5]:5001', { host: 'fd00::5', port: 5001 }],
    ['shoal-0.shoal.kube-system:5001', { host: 'shoal-0.shoal.kube-system', port: 5001 }],
    ['/ip4/10.0.0.5/tcp/5001', { host: '10.0.0.5', port: 5001 }],
    ['/ip6/fd00::5/tcp/5001', { host: 'fd00::5', port: 5001 }],
    ['/dns4/shoal-0.shoal/tcp/5001', { host: 'shoal-0.shoal', port: 5001 }],
    [`/ip4/10.0.0.5/tcp/5001/p2p/${PEER_ID}`, { host: '10.0.0.5', port: 5001, peerId: PEER_ID }],
  ] as const) {
    it(`reads ${raw}`, () => assert.deepEqual(parseBootstrapPeer(raw), want));
  }

  for (const raw of [':5001', '10.0.0.5', '/ip4/10.0.0.5', '/ip4/10.0.0.5/udp/5001', '/ip4/10.0.0.5/tcp/5001/ws', '/nonsense/1']) {
    it(`refuses ${raw}`, () => assert.throws(() => parseBootstrapPeer(raw)));
  }
});

describe('systemResolver', () => {
  it('resolves through getaddrinfo (/etc/hosts here)', async () => {
    assert.ok((await resolveHost(systemResolver, 'localhost')).includes('127.0.0.1'));
  });
});

describe('DNS bootstrap', function () {
  this.timeout(15_000);
  let dns: TestDnsServer;
  const net = new TestNetwork();

  beforeEach(async () => {
    dns = await new TestDnsServer('127.0.0.53').start();
  });
  afterEach(async () => {
    await net.close();
    await dns.close();
  });

  it('resolves a name through real DNS packets; NXDOMAIN means no addresses', async () => {
    dns.records.set('peers.shoal.test', ['127.0.0.111', '127.0.0.112']);
    const resolver = dns.resolver();
    assert.deepEqual((await resolveHost(resolver, 'peers.shoal.test')).sort(), ['127.0.0.111', '127.0.0.112']);
    assert.deepEqual(await resolveHost(resolver, 'missing.shoal.test'), []);
    assert.deepEqual(await resolveHost(resolver, '127.0.0.9'), ['127.0.0.9']);
    assert.ok(dns.queries >= 4);
  });

  it('joins every address the name has, at the router port, and picks up a node added later', async () => {
    const ips = ['127.0.0.111', '127.0.0.112', '127.0.0.113', '127.0.0.114'];
    const port = await freePort(ips);
    dns.records.set('peers.shoal.test', ips.slice(0, 3));
    const init = { port, bootstrapDns: 'peers.shoal.test', resolver: dns.resolver(), bootstrapIntervalMs: 200 };
    const nodes = await Promise.all(ips.slice(0, 3).map((ip) => net.start(ip, init)));
    await until('all three have a peer', () => nodes.every((n) => n.ready() && n.stats().peers > 0));

    nodes[0]!.advertise(['sha256:dns']);
    await until('found through the DNS-joined network', async () => (await lookupAll(nodes[2]!, 'sha256:dns', 300)).some((p) => p.host === '127.0.0.111'));

    // A fourth node appears in DNS; it has no bootstrap of its own, so the others must dial it.
    const late = await net.start(ips[3]!, { port });
    dns.records.set('peers.shoal.test', ips);
    await until('the late node was dialed by the others', () => late.stats().peers > 0);
    await until('the late node finds the key', async () => (await lookupAll(late, 'sha256:dns', 300)).length === 1);
  });

  it('is ready when the name resolves to this node alone', async () => {
    const port = await freePort(['127.0.0.115']);
    dns.records.set('alone.shoal.test', ['127.0.0.115']);
    const node = await net.start('127.0.0.115', { port, bootstrapDns: 'alone.shoal.test', resolver: dns.resolver() });
    await until('ready alone', () => node.ready());
    assert.equal(node.stats().peers, 0);
  });

  it('is not ready while the name has no addresses at all (a wrong name), and joins once it has', async () => {
    const port = await freePort(['127.0.0.116']);
    const node = await net.start('127.0.0.116', { port, bootstrapDns: 'late.shoal.test', resolver: dns.resolver(), bootstrapIntervalMs: 200 });
    const asked = dns.queries;
    await until('asked DNS again', () => dns.queries >= asked + 3);
    assert.equal(node.ready(), false, 'NXDOMAIN is no evidence of being alone');
    dns.records.set('late.shoal.test', ['127.0.0.116']);
    await until('ready once the name lists this node', () => node.ready());
  });

  it('bootstraps again after every peer went away, and re-provides to the peers that came back', async () => {
    const ips = ['127.0.0.121', '127.0.0.122', '127.0.0.123'];
    const port = await freePort(ips);
    dns.records.set('peers.shoal.test', ips);
    const init = { port, bootstrapDns: 'peers.shoal.test', resolver: dns.resolver(), bootstrapIntervalMs: 400 };
    const [a, b, c] = await Promise.all(ips.map((ip) => net.start(ip, init)));
    await until('a has both peers', () => a!.stats().peers === 2);
    a!.advertise(['sha256:survivor']);
    await until('b sees the key', async () => (await lookupAll(b!, 'sha256:survivor', 300)).length === 1);

    await Promise.all([b!.close(), c!.close()]);
    await until('a noticed it is alone', () => a!.stats().peers === 0 && !a!.ready());

    // They come back at the same addresses, fresh (no records, no bootstrap of their own): a must find them.
    const b2 = await net.start(ips[1]!, { port });
    const c2 = await net.start(ips[2]!, { port });
    await until('a rejoined', () => a!.ready() && a!.stats().peers === 2);
    await until('the newcomers find a\'s key', async () =>
      (await lookupAll(b2, 'sha256:survivor', 300)).length === 1 && (await lookupAll(c2, 'sha256:survivor', 300)).length === 1,
    );
  });
});
