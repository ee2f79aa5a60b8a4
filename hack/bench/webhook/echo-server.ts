/**
 * The webhook bench's reference: a no-op admission webhook on the same HTTPS
 * stack as Shoal's (node:https, the same certificate and key files, TLS 1.2 and
 * up, the same keep-alive timeout). It reads the body, parses the review and
 * allows it with the same uid and no patch, so the bench's ratio to it is
 * Shoal's own cost: routing, checking, resolving and patching.
 *
 * `node hack/bench/webhook/echo-server.ts --addr 127.0.0.1:PORT --tls-cert-file F --tls-key-file F`
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { addr: { type: 'string' }, 'tls-cert-file': { type: 'string' }, 'tls-key-file': { type: 'string' } },
  strict: true,
});
const addr = /^(.+):(\d+)$/.exec(values.addr ?? '');
if (addr === null || values['tls-cert-file'] === undefined || values['tls-key-file'] === undefined) {
  process.stderr.write('usage: echo-server.ts --addr HOST:PORT --tls-cert-file PATH --tls-key-file PATH\n');
  process.exit(2);
}

const server = createServer({ cert: readFileSync(values['tls-cert-file']), key: readFileSync(values['tls-key-file']), minVersion: 'TLSv1.2' }, (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    let uid: unknown;
    try {
      uid = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { request?: { uid?: unknown } }).request?.uid;
    } catch {
      uid = undefined;
    }
    if (req.method !== 'POST' || typeof uid !== 'string') {
      res.writeHead(400, { 'Content-Type': 'text/plain' }).end('POST an AdmissionReview\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, allowed: true } }));
  });
});
// The webhook's (server.ts): longer than the client's idle timeout.
server.keepAliveTimeout = 100_000;
server.listen(Number(addr[2]), addr[1], () => process.stdout.write(`echo serving on ${values.addr}\n`));
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
