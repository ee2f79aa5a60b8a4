/**
 * Which of a peer's addresses to use. Pods have a loopback address besides
 * their pod IP; kad-dht's default mapper drops every private address (and so
 * every pod IP), so Shoal keeps private ones and drops only loopback and
 * link-local addresses, and only when the peer has another.
 */
import { isIP } from 'node:net';
import type { PeerInfo } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';

/** The IP and TCP port of `/ip4|ip6/<ip>/tcp/<port>/...`, else undefined. */
export function ipPortOf(addr: Multiaddr): { ip: string; port: number | undefined } | undefined {
  const [ip, tcp] = addr.getComponents();
  if ((ip?.name !== 'ip4' && ip?.name !== 'ip6') || ip.value === undefined) return undefined;
  return { ip: ip.value, port: tcp?.name === 'tcp' && tcp.value !== undefined ? Number(tcp.value) : undefined };
}

/** 0 a routable (private or public) IPv4, 1 such an IPv6, 2 link-local, 3 loopback. */
function rank(ip: string): number {
  if (isIP(ip) === 4) {
    if (ip.startsWith('127.')) return 3;
    if (ip.startsWith('169.254.')) return 2;
    return 0;
  }
  const lower = ip.toLowerCase();
  if (lower === '::1') return 3;
  if (/^fe[89ab]/.test(lower)) return 2;
  if (lower.startsWith('::ffff:')) return rank(lower.slice(7));
  return 1;
}

/** The IP others should use: a routable one when there is one, else loopback (tests, one host). */
export function pickHost(addrs: readonly Multiaddr[]): string | undefined {
  let best: { ip: string; rank: number } | undefined;
  for (const addr of addrs) {
    const ip = ipPortOf(addr)?.ip;
    if (ip === undefined) continue;
    const r = rank(ip);
    if (best === undefined || r < best.rank) best = { ip, rank: r };
  }
  return best?.ip;
}

/** Drops loopback and link-local addresses when a routable one exists; keeps all otherwise. */
export function reachableAddresses(addrs: Multiaddr[]): Multiaddr[] {
  const routable = addrs.filter((addr) => {
    const ip = ipPortOf(addr)?.ip;
    return ip === undefined || rank(ip) <= 1;
  });
  return routable.some((addr) => ipPortOf(addr) !== undefined) ? routable : addrs;
}

/** kad-dht peerInfoMapper: keeps private addresses (pod IPs). */
export function reachablePeerInfo(peer: PeerInfo): PeerInfo {
  return { ...peer, multiaddrs: reachableAddresses(peer.multiaddrs) };
}
