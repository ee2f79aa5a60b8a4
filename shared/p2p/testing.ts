/** Real DHT nodes on loopback addresses (127.0.0.x), for the p2p tests. */
import { Resolver } from 'node:dns/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, Packet } from 'dns2';
import { silentLogger } from '../log.ts';
import { DhtRouter, type DhtRouterInit } from './dht-router.ts';

export type TestNodeInit = Partial<Omit<DhtRouterInit, 'listen'>> & { port?: number };

/** Starts routers and stops them all (and deletes their data dirs) on close. */
export class TestNetwork {
  readonly routers: DhtRouter[] = [];
  readonly #dirs: string[] = [];

  /** A router listening on ip (port 0 unless given), with a fresh data dir unless given. */
  async start(ip: string, init: TestNodeInit = {}): Promise<DhtRouter> {
    let dataDir = init.dataDir;
    if (dataDir === undefined) {
      dataDir = await mkdtemp(join(tmpdir(), 'shoal-dht-'));
      this.#dirs.push(dataDir);
    }
    const router = await DhtRouter.create({
      logger: silentLogger,
      bootstrapRetryMs: 100,
      ...init,
      dataDir,
      listen: { host: ip, port: init.port ?? 0 },
    });
    this.routers.push(router);
    return router;
  }

  async tempDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-dht-'));
    this.#dirs.push(dir);
    return dir;
  }

  async close(): Promise<void> {
    await Promise.all(this.routers.splice(0).map((r) => r.close()));
    await Promise.all(this.#dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  }
}

/** `ip:port` of a router, for bootstrapPeers. */
export function hostPort(router: DhtRouter): string {
  const m = router.addresses()[0]?.match(/^\/ip4\/([^/]+)\/tcp\/(\d+)/);
  if (!m) throw new Error(`router has no IPv4 address: ${router.addresses().join(', ')}`);
  return `${m[1]}:${m[2]}`;
}

/** Polls until check() holds, or fails after timeoutMs. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Every provider a lookup yields before the signal ends it. */
export async function lookupAll(router: DhtRouter, key: string, timeoutMs = 1_000, count = 20): Promise<{ peerId: string; host: string }[]> {
  const found: { peerId: string; host: string }[] = [];
  for await (const provider of router.lookup(key, { count, signal: AbortSignal.timeout(timeoutMs) })) found.push(provider);
  return found;
}

/** A DNS server on a loopback IP that answers A queries from a table the test changes; other names get NXDOMAIN. */
export class TestDnsServer {
  /** Name (without trailing dot) → IPv4 addresses. */
  readonly records = new Map<string, string[]>();
  /** A and AAAA questions received. */
  queries = 0;
  readonly #server = createServer({
    udp: true,
    handle: (request, send) => {
      const response = Packet.createResponseFromRequest(request);
      const question = request.questions[0];
      if (question !== undefined) {
        this.queries++;
        const name = question.name.replace(/\.$/, '').toLowerCase();
        const ips = this.records.get(name);
        if (ips === undefined) response.header.rcode = 3; // NXDOMAIN
        else if (question.type === Packet.TYPE.A) {
          for (const address of ips) response.answers.push(Packet.createResourceFromQuestion(question, { type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl: 1, address }));
        }
      }
      void send(response);
    },
  });
  #port = 0;
  readonly ip: string;

  constructor(ip: string) {
    this.ip = ip;
  }

  async start(): Promise<this> {
    const addresses = await this.#server.listen({ udp: { port: 0, address: this.ip } });
    this.#port = addresses.udp!.port;
    return this;
  }

  /** A node:dns resolver that asks only this server. */
  resolver(): Resolver {
    const resolver = new Resolver({ timeout: 500, tries: 1 });
    resolver.setServers([`${this.ip}:${this.#port}`]);
    return resolver;
  }

  close(): Promise<void> {
    return this.#server.close();
  }
}

/** A TCP port free on every given loopback IP (DNS bootstrap dials one port at every address). */
export async function freePort(ips: readonly string[]): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 30_000);
    const servers = [];
    let ok = true;
    for (const ip of ips) {
      const server = createTcpServer();
      const listening = await new Promise<boolean>((resolve) => {
        server.once('error', () => resolve(false));
        server.listen(port, ip, () => resolve(true));
      });
      if (!listening) ok = false;
      else servers.push(server);
      if (!ok) break;
    }
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    if (ok) return port;
  }
}
