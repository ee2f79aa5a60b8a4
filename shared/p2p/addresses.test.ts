import assert from 'node:assert/strict';
import { multiaddr } from '@multiformats/multiaddr';
import { pickHost, reachableAddresses } from './addresses.ts';

const ma = (...addrs: string[]) => addrs.map((a) => multiaddr(a));

describe('peer addresses', () => {
  it('picks a routable IPv4 over IPv6, link-local and loopback', () => {
    assert.equal(pickHost(ma('/ip4/127.0.0.1/tcp/5001', '/ip6/fd00::5/tcp/5001', '/ip4/10.244.1.7/tcp/5001')), '10.244.1.7');
    assert.equal(pickHost(ma('/ip4/127.0.0.1/tcp/5001', '/ip6/fe80::1/tcp/5001', '/ip6/fd00::5/tcp/5001')), 'fd00::5');
  });

  it('falls back to loopback when that is all there is', () => {
    assert.equal(pickHost(ma('/ip4/127.0.0.12/tcp/5001/p2p/12D3KooWJNf8JSsXon8KaLTHq6sEbRZPPSWQtKAvUehqtBvXTBnR')), '127.0.0.12');
    assert.equal(pickHost(ma('/dns4/example.com/tcp/5001')), undefined);
    assert.equal(pickHost([]), undefined);
  });

  it('drops loopback and link-local addresses only when a routable one exists', () => {
    assert.deepEqual(reachableAddresses(ma('/ip4/127.0.0.1/tcp/1', '/ip4/10.0.0.1/tcp/1', '/ip6/fe80::1/tcp/1')).map(String), ['/ip4/10.0.0.1/tcp/1']);
    assert.deepEqual(reachableAddresses(ma('/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.2/tcp/1')).map(String), ['/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.2/tcp/1']);
    assert.deepEqual(reachableAddresses(ma('/ip4/192.168.1.4/tcp/1', '/ip4/8.8.8.8/tcp/1')).map(String), ['/ip4/192.168.1.4/tcp/1', '/ip4/8.8.8.8/tcp/1']);
  });
});
