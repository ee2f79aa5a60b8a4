/**
 * Joining the network: dial a few known peers (static addresses, and the A/AAAA
 * records of a DNS name such as a headless Service); the DHT's own self-query
 * then finds the rest. Runs again now and then (to heal a split, to pick up
 * peers that came back under new addresses), and at once whenever the routing
 * table empties.
 *
 * Dialing a bare `/ip4/A/tcp/P` (no `/p2p/<id>`) works: the peer id is learned
 * in the handshake. @libp2p/bootstrap refuses such addresses, hence this file.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { multiaddr } from '@multiformats/multiaddr';
import { parseListenAddress } from '../listen-address.ts';
import type { Logger } from '../log.ts';

/** A peer to join through: an IP or DNS name, a port, and the peer id when known. */
export interface BootstrapTarget {
  readonly host: string;
  readonly port: number;
  readonly peerId?: string;
}

/** The part of node:dns's promises Resolver that bootstrap uses. */
export interface DnsResolver {
  resolve4(hostname: string): Promise<string[]>;
  resolve6(hostname: string): Promise<string[]>;
}

/**
 * The system resolver (getaddrinfo): honours /etc/hosts and the search domains
 * of /etc/resolv.conf, so a pod may name a Service in its own namespace
 * briefly. node:dns's Resolver.resolve4 asks the name exactly as given.
 */
export const systemResolver: DnsResolver = {
  resolve4: (hostname) => lookupFamily(hostname, 4),
  resolve6: (hostname) => lookupFamily(hostname, 6),
};

async function lookupFamily(hostname: string, family: 4 | 6): Promise<string[]> {
  return (await lookup(hostname, { family, all: true })).map((entry) => entry.address);
}

/** `host:port`, `[v6]:port`, or a multiaddr `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/p2p/<id>]`. */
export function parseBootstrapPeer(raw: string): BootstrapTarget {
  if (!raw.startsWith('/')) {
    const addr = parseListenAddress(raw);
    if (addr.host === undefined) throw new Error(`bootstrap peer "${raw}" has no host`);
    return { host: addr.host, port: addr.port };
  }
  let components;
  try {
    components = multiaddr(raw).getComponents();
  } catch (err) {
    throw new Error(`bootstrap peer "${raw}" is not a multiaddr: ${(err as Error).message}`);
  }
  const [host, tcp, p2p, ...rest] = components;
  const hostKinds = ['ip4', 'ip6', 'dns', 'dns4', 'dns6'];
  if (host === undefined || !hostKinds.includes(host.name) || host.value === undefined || tcp?.name !== 'tcp' || tcp.value === undefined) {
    throw new Error(`bootstrap peer "${raw}" must be /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/p2p/<id>]`);
  }
  if (rest.length > 0 || (p2p !== undefined && p2p.name !== 'p2p')) throw new Error(`bootstrap peer "${raw}" has parts after /tcp/<port>[/p2p/<id>]`);
  return { host: host.value, port: Number(tcp.value), ...(p2p?.value !== undefined && { peerId: p2p.value }) };
}

/** The addresses of a name (an IP is its own address). NXDOMAIN and no records both mean none. */
export async function resolveHost(resolver: DnsResolver, host: string): Promise<string[]> {
  if (isIP(host) !== 0) return [host];
  const results = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
  const addresses: string[] = [];
  const errors: Error[] = [];
  for (const result of results) {
    if (result.status === 'fulfilled') addresses.push(...result.value);
    else if (!isNoRecords(result.reason)) errors.push(result.reason as Error);
  }
  if (addresses.length === 0 && errors.length > 0) throw new Error(`cannot resolve ${host}: ${errors[0]!.message}`);
  return addresses;
}

function isNoRecords(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOTFOUND' || code === 'ENODATA';
}

/** One dialable address, as a multiaddr string. */
export function dialAddress(ip: string, port: number, peerId?: string): string {
  const base = `/${isIP(ip) === 6 ? 'ip6' : 'ip4'}/${ip}/tcp/${port}`;
  return peerId === undefined ? base : `${base}/p2p/${peerId}`;
}

export interface BootstrapperInit {
  readonly targets: readonly BootstrapTarget[];
  /** Name whose A/AAAA records are peers, each at dnsPort. */
  readonly dnsName: string | undefined;
  readonly dnsPort: number;
  readonly resolver: DnsResolver;
  /** Dials an address (a multiaddr string); resolves to the remote peer id, rejects when unreachable. */
  dial(addr: string, signal: AbortSignal): Promise<string>;
  /** Whether this node is the one at ip:port (never dial ourselves). */
  isSelf(ip: string, port: number): boolean;
  isConnected(peerId: string): boolean;
  /** Whether the routing table holds a peer. */
  hasPeers(): boolean;
  /** Between rounds while the node has peers. */
  readonly intervalMs: number;
  /** Between rounds while it has none, doubling up to intervalMs. */
  readonly retryMs: number;
  /** Per dial. */
  readonly dialTimeoutMs: number;
  readonly logger: Logger;
}

/** Connections a round aims for; the self-query finds every other peer. */
const DIALS_PER_ROUND = 3;
const DIAL_CONCURRENCY = 4;

export class Bootstrapper {
  readonly #init: BootstrapperInit;
  readonly #stop = new AbortController();
  /** Which peer answered at an address, so a connected peer is not dialed again. */
  readonly #peerAt = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #alone = false;
  #failing = false;
  readonly #unresolved = new Set<string>();
  #retryMs: number;

  constructor(init: BootstrapperInit) {
    this.#init = init;
    this.#retryMs = init.retryMs;
  }

  /** Whether there is anything to bootstrap from. */
  get configured(): boolean {
    return this.#init.targets.length > 0 || this.#init.dnsName !== undefined;
  }

  /** The last round found no peer but this node: it is the network. */
  get alone(): boolean {
    return this.#alone;
  }

  start(): void {
    if (this.configured) this.trigger();
  }

  /** Runs a round now (or right after the one running). */
  trigger(): void {
    if (this.#stop.signal.aborted) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    clearTimeout(this.#timer);
    this.#running = this.#round()
      .catch((err: unknown) => this.#init.logger.warn('bootstrap round failed', { err }))
      .finally(() => {
        this.#running = undefined;
        if (this.#stop.signal.aborted) return;
        if (this.#again) {
          this.#again = false;
          this.trigger();
          return;
        }
        // Without peers, retry soon, then less and less often (a lone node must not hammer DNS).
        let delay = this.#init.intervalMs;
        if (this.#init.hasPeers()) {
          this.#retryMs = this.#init.retryMs;
        } else {
          delay = Math.min(this.#retryMs, this.#init.intervalMs);
          this.#retryMs = Math.min(this.#retryMs * 2, this.#init.intervalMs);
        }
        this.#timer = setTimeout(() => this.trigger(), delay);
        this.#timer.unref();
      });
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    clearTimeout(this.#timer);
    await this.#running;
  }

  async #round(): Promise<void> {
    const { logger } = this.#init;
    const { candidates, complete } = await this.#candidates();
    this.#alone = complete && candidates.length === 0;
    const toDial = shuffle(candidates.filter((c) => !this.#isConnected(c.addr)));
    let connected = candidates.length - toDial.length;
    const failures: string[] = [];
    const next = () => (connected < DIALS_PER_ROUND ? toDial.shift() : undefined);
    const worker = async () => {
      for (let c = next(); c !== undefined && !this.#stop.signal.aborted; c = next()) {
        const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(this.#init.dialTimeoutMs)]);
        try {
          this.#peerAt.set(c.addr, await this.#init.dial(c.addr, signal));
          connected++;
        } catch (err) {
          failures.push(c.addr);
          logger.debug('bootstrap dial failed', { addr: c.addr, err });
        }
      }
    };
    await Promise.all(Array.from({ length: DIAL_CONCURRENCY }, worker));
    if (this.#stop.signal.aborted) return;
    const failing = candidates.length > 0 && connected === 0;
    if (failing && !this.#failing) logger.warn('no bootstrap peer reachable; retrying', { candidates: candidates.length, failed: failures.slice(0, 5) });
    else if (!failing && this.#failing) logger.info('bootstrap peer reachable again', { connected });
    this.#failing = failing;
    logger.debug('bootstrap round', { candidates: candidates.length, connected, failed: failures.length, alone: this.#alone });
  }

  #isConnected(addr: string): boolean {
    const peerId = this.#peerAt.get(addr);
    return peerId !== undefined && this.#init.isConnected(peerId);
  }

  /** Every address to try, ourselves left out; complete: every name resolved (a failing one is logged and skipped). */
  async #candidates(): Promise<{ candidates: { addr: string }[]; complete: boolean }> {
    const { targets, dnsName, dnsPort, resolver, logger } = this.#init;
    const wanted = [...targets, ...(dnsName === undefined ? [] : [{ host: dnsName, port: dnsPort }])] as BootstrapTarget[];
    const byAddr = new Map<string, { addr: string }>();
    let complete = true;
    await Promise.all(
      wanted.map(async (target) => {
        let ips: string[];
        try {
          ips = await resolveHost(resolver, target.host);
        } catch (err) {
          ips = [];
          if (!this.#unresolved.has(target.host)) logger.warn('bootstrap name did not resolve', { host: target.host, err });
          this.#unresolved.add(target.host);
        }
        if (ips.length === 0) {
          // Not even this node: a wrong name (or a Service whose records have not appeared yet).
          // Never "alone" on that evidence, or a misnamed mirror would look healthy and isolated.
          if (!this.#unresolved.has(target.host)) logger.warn('bootstrap name has no addresses; check --bootstrap-dns', { host: target.host });
          this.#unresolved.add(target.host);
          complete = false;
          return;
        }
        if (this.#unresolved.delete(target.host)) logger.info('bootstrap name resolves again', { host: target.host });
        for (const ip of ips) {
          if (this.#init.isSelf(ip, target.port)) continue;
          const addr = dialAddress(ip, target.port, target.peerId);
          byAddr.set(addr, { addr });
        }
      }),
    );
    return { candidates: [...byAddr.values()], complete };
  }
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}
