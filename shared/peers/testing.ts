/**
 * Real HTTP peers for this directory's tests and the handler's: each listens
 * on its own loopback address, all on one port, as nodes of a cluster do on
 * the peer registry port.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Registry, type Metric } from 'prom-client';
import type { Digest } from '../digest.ts';
import { close, listen } from '../http-listen.ts';
import { silentLogger } from '../log.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LookupOptions, Provider, Router } from '../p2p/router.ts';
import { createMirrorMetrics } from '../../mirror/metrics.ts';
import { createRegistryHandler } from '../../mirror/registry/handler.ts';
import { parseRange } from '../../mirror/registry/range.ts';
import type { MemoryStore } from '../../mirror/store/memory-store.ts';

export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly range: string | undefined;
  readonly peerHeader: string | undefined;
}

export type PeerHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface TestPeer {
  readonly provider: Provider;
  /** Every request this peer received, in order. */
  readonly seen: SeenRequest[];
}

/** A set of peers on 127.0.<n>.x, one port for all; `host` entries with no handler stay unreachable. */
export class TestPeers {
  readonly port: number;
  readonly #servers: Server[];

  private constructor(port: number, servers: Server[]) {
    this.port = port;
    this.#servers = servers;
  }

  /**
   * Starts one server per handler (undefined: an address where nothing listens).
   * The port is picked free on the first address and retried when another address has it taken.
   */
  static async start(handlers: readonly (PeerHandler | undefined)[]): Promise<{ peers: TestPeers; list: TestPeer[] }> {
    const net = 100 + Math.floor(Math.random() * 150);
    for (let attempt = 0; attempt < 5; attempt++) {
      const servers: Server[] = [];
      const list: TestPeer[] = [];
      let port = 0;
      try {
        for (const [i, handler] of handlers.entries()) {
          const host = `127.0.${net}.${i + 2}`;
          const peer: TestPeer = { provider: { peerId: `peer-${i}`, host }, seen: [] };
          list.push(peer);
          if (handler === undefined) continue;
          const server = createServer((req, res) => {
            peer.seen.push({ method: req.method ?? '', url: req.url ?? '', range: req.headers.range, peerHeader: req.headers['shoal-peer-request'] as string | undefined });
            handler(req, res);
          });
          servers.push(server);
          port = await listen(server, { host, port });
        }
        return { peers: new TestPeers(port, servers), list };
      } catch (err) {
        await Promise.all(servers.filter((s) => s.listening).map((s) => close(s, 0)));
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      }
    }
    throw new Error('no port free on every test address');
  }

  async close(): Promise<void> {
    await Promise.all(this.#servers.map((s) => close(s, 0)));
  }
}

/** A peer that runs the real registry handler over a store, as another node's mirror does. */
export function goodPeer(store: MemoryStore): PeerHandler {
  return createRegistryHandler({ store, mirroredRegistries: [], logger: silentLogger, metrics: createMirrorMetrics(new Registry()) });
}

/** A peer that always answers 404, as one whose record outlived its content. */
export function notFoundPeer(): PeerHandler {
  return (_req, res) => {
    const body = JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to this node' }] });
    res.writeHead(404, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };
}

export type Misbehaviour =
  /** Sends the right length of wrong bytes. */
  | { readonly kind: 'corrupt' }
  /** Sends the first `after` bytes of the body, then closes the connection. */
  | { readonly kind: 'dying'; readonly after: number }
  /** Sends the headers and the first `after` bytes of the body, then nothing, holding the connection open. */
  | { readonly kind: 'stalling'; readonly after: number };

/** A peer that answers for one blob with honest headers (Range too) and misbehaves in its body. */
export function badPeer(digest: Digest, content: Buffer, how: Misbehaviour): PeerHandler {
  const bytes = how.kind === 'corrupt' ? flipped(content) : content;
  return (req, res) => {
    if (!(req.url ?? '').includes(digest.text)) {
      res.writeHead(404, { 'Content-Length': 0 });
      res.end();
      return;
    }
    const range = parseRange(req.headers.range, bytes.length);
    const start = range.kind === 'range' ? range.range.start : 0;
    const end = range.kind === 'range' ? range.range.end : bytes.length - 1;
    const headers: Record<string, string | number> = { 'Content-Type': 'application/octet-stream', 'Content-Length': end - start + 1, 'Docker-Content-Digest': digest.text };
    if (range.kind === 'range') headers['Content-Range'] = `bytes ${start}-${end}/${bytes.length}`;
    res.writeHead(range.kind === 'range' ? 206 : 200, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const body = bytes.subarray(start, end + 1);
    switch (how.kind) {
      case 'corrupt':
        res.end(body);
        return;
      case 'dying':
        // Destroyed once the bytes are handed to the kernel: they arrive, then the connection ends early.
        res.write(body.subarray(0, how.after), () => res.socket?.destroy());
        return;
      case 'stalling':
        res.write(body.subarray(0, how.after));
        return;
    }
  };
}

/** Same length, one byte different in the middle. */
function flipped(content: Buffer): Buffer {
  const out = Buffer.from(content);
  const i = Math.floor(out.length / 2);
  out[i] = out[i]! ^ 0xff;
  return out;
}

/**
 * A router whose lookups yield given providers at given delays from the start
 * (as a slow DHT would), then stay silent until their signal aborts. Records the keys looked up.
 */
export class ScriptedRouter implements Router {
  readonly lookups: string[] = [];
  /** Providers handed out so far, over all lookups. */
  yielded = 0;
  /** Lookups not ended yet. */
  running = 0;
  readonly #script: readonly { readonly provider: Provider; readonly atMs: number }[];

  constructor(script: readonly { readonly provider: Provider; readonly atMs: number }[]) {
    this.#script = script;
  }

  async *lookup(key: string, options: LookupOptions): AsyncGenerator<Provider> {
    this.lookups.push(key);
    this.running++;
    const started = Date.now();
    let yielded = 0;
    try {
      for (const { provider, atMs } of this.#script) {
        if (yielded >= options.count) return;
        await sleep(Math.max(0, atMs - (Date.now() - started)), undefined, { signal: options.signal });
        yielded++;
        this.yielded++;
        yield provider;
      }
      await sleep(60_000, undefined, { signal: options.signal });
    } catch {
      // Aborted: a lookup just ends.
    } finally {
      this.running--;
    }
  }

  advertise(): void {}
  withdraw(): void {}
  advertised(): ReadonlySet<string> {
    return new Set();
  }
  ready(): boolean {
    return true;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The sum of a metric's samples that carry `labels` (and, for histograms, the sample `name`, e.g. `..._count`). */
export async function metricValue(metric: Metric, labels: Record<string, string>, name?: string): Promise<number> {
  const { values } = await metric.get();
  return values
    .filter((v) => (name === undefined || (v as { metricName?: string }).metricName === name) && Object.entries(labels).every(([k, x]) => v.labels[k] === x))
    .reduce((sum, v) => sum + v.value, 0);
}
