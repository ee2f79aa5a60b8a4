/** /metrics, /healthz and /readyz, for kubelet probes and Prometheus. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';

export interface OpsHandlerInit {
  registry: Registry;
  /** Whether the process should receive traffic now. */
  ready: () => boolean;
}

export function createOpsHandler(init: OpsHandlerInit): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const text = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(405, 'method not allowed\n');
    switch (path) {
      case '/healthz':
        return text(200, 'ok\n');
      case '/readyz':
        return init.ready() ? text(200, 'ready\n') : text(503, 'not ready\n');
      case '/metrics':
        init.registry.metrics().then(
          (body) => text(200, body, init.registry.contentType),
          (err: Error) => text(500, `metrics failed: ${err.message}\n`),
        );
        return;
      default:
        return text(404, 'not found\n');
    }
  };
}
