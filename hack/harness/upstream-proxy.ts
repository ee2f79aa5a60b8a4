/**
 * A front for the upstream registry that misbehaves for Shoal only: requests
 * whose User-Agent starts with `shoal` can be answered with a status, left
 * unanswered, or streamed slowly; every other client (containerd, skopeo) is
 * passed through untouched, so "containerd's own path still works" can be
 * checked against the same registry name.
 */
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export type ProxyMode =
  | { readonly kind: 'pass'; /** Throttles response bodies to about this rate. Default: no limit. */ readonly bytesPerSecond?: number }
  | { readonly kind: 'status'; readonly status: number }
  | { readonly kind: 'silent' };

export interface UpstreamProxy {
  /** `IP:PORT`: the registry name in image references. */
  readonly host: string;
  /** `http://IP:PORT` */
  readonly url: string;
  /** Where requests go; set before the first one. */
  target: string | undefined;
  /** What Shoal's requests get (default pass). */
  mode: ProxyMode;
  stop(): Promise<void>;
}

export async function startUpstreamProxy(ip = '127.0.0.1'): Promise<UpstreamProxy> {
  const open = new Set<ServerResponse>();
  const proxy: UpstreamProxy = { host: '', url: '', target: undefined, mode: { kind: 'pass' }, stop };
  const server = createServer((req, res) => {
    open.add(res);
    res.once('close', () => open.delete(res));
    const fromShoal = (req.headers['user-agent'] ?? '').startsWith('shoal');
    const mode: ProxyMode = fromShoal ? proxy.mode : { kind: 'pass' };
    if (mode.kind === 'silent') return;
    if (mode.kind === 'status') {
      res.writeHead(mode.status, { 'content-type': 'application/json', ...(mode.status === 429 ? { 'retry-after': '60' } : {}) });
      res.end(JSON.stringify({ errors: [{ code: mode.status === 429 ? 'TOOMANYREQUESTS' : 'UNKNOWN', message: 'from the test proxy' }] }));
      return;
    }
    forward(req, res, mode.bytesPerSecond);
  });
  const forward = (req: IncomingMessage, res: ServerResponse, bytesPerSecond: number | undefined) => {
    if (proxy.target === undefined) throw new Error('upstream proxy: no target');
    const target = new URL(proxy.target);
    const out = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      if (bytesPerSecond === undefined) {
        up.pipe(res);
        return;
      }
      void (async () => {
        for await (const chunk of up as AsyncIterable<Buffer>) {
          for (let at = 0; at < chunk.length; at += 64 * 1024) {
            if (res.destroyed) return up.destroy();
            if (!res.write(chunk.subarray(at, at + 64 * 1024))) await new Promise((r) => res.once('drain', r));
            await sleep(Math.ceil((64 * 1024 * 1000) / bytesPerSecond));
          }
        }
        res.end();
      })().catch(() => res.destroy());
    });
    out.on('error', () => res.destroy());
    res.once('close', () => out.destroy());
    req.pipe(out);
  };
  await new Promise<void>((resolve) => server.listen(0, ip, resolve));
  const { port } = server.address() as AddressInfo;
  Object.assign(proxy, { host: `${ip}:${port}`, url: `http://${ip}:${port}` });
  async function stop(): Promise<void> {
    for (const res of open) res.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  return proxy;
}
