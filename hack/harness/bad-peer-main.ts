/**
 * A misbehaving peer, as its own process, for end-to-end tests: it joins the
 * DHT (with or without the network key), advertises blobs it claims to hold, and
 * answers blob GETs on its registry port either with wrong bytes of the right
 * length (`corrupt`) or with headers and a first piece, then silence (`stall`).
 * Everything else is a 404. It logs one JSON line per request it serves.
 *
 *   node bad-peer-main.ts MODE IP REGISTRY_PORT ROUTER_PORT DATA_DIR BOOTSTRAP KEYFILE|- DIGEST=FILE...
 */
import { createServer } from 'node:http';
import { readFileSync, statSync } from 'node:fs';
import { createLogger } from '../../shared/log.ts';
import { DhtRouter } from '../../shared/p2p/dht-router.ts';
import { readNetworkKeyFile } from '../../shared/p2p/network-key.ts';

const [mode, ip, registryPort, routerPort, dataDir, bootstrap, keyFile, ...blobArgs] = process.argv.slice(2);
if (mode !== 'corrupt' && mode !== 'stall') throw new Error(`mode must be corrupt or stall, not ${mode}`);
const blobs = new Map(blobArgs.map((arg) => arg.split('=') as [string, string]));
const logger = createLogger({ level: 'info' }, { component: 'bad-peer', mode });

const router = await DhtRouter.create({
  dataDir: dataDir!,
  logger,
  listen: { host: ip, port: Number(routerPort) },
  networkKey: keyFile === '-' ? undefined : await readNetworkKeyFile(keyFile!),
  bootstrapPeers: bootstrap!.split(','),
  bootstrapRetryMs: 200,
});

const server = createServer((req, res) => {
  const digest = req.url?.match(/\/blobs\/(sha256:[0-9a-f]{64})/)?.[1];
  const file = digest === undefined ? undefined : blobs.get(digest);
  logger.info('request', { method: req.method, url: req.url, range: req.headers.range, served: file !== undefined });
  if (file === undefined) {
    res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}');
    return;
  }
  const size = statSync(file).size;
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': size, 'Docker-Content-Digest': digest! });
  if (req.method === 'HEAD') return void res.end();
  const bytes = readFileSync(file);
  if (mode === 'stall') {
    res.write(bytes.subarray(0, 64 * 1024));
    return; // and never another byte
  }
  // Right length, wrong bytes: every byte flipped.
  for (let i = 0; i < bytes.length; i++) bytes[i] = bytes[i]! ^ 0xff;
  res.end(bytes);
});
server.listen(Number(registryPort), ip, () => void advertise());

/**
 * Advertises once connected to every bootstrap peer (or after 5 s, for a process
 * that never gets in), so that its records reach every node before anyone else's
 * for the same key; then says how it went.
 */
async function advertise(): Promise<void> {
  const peers = bootstrap!.split(',').length;
  const joinBy = Date.now() + 5000;
  while (router.stats().peers < peers && Date.now() < joinBy) await new Promise((resolve) => setTimeout(resolve, 50));
  router.advertise(blobs.keys());
  // Without the network key nobody takes the records, and a provide only gives up at its timeout: report after 5 s at most.
  await Promise.race([router.providesIdle(), new Promise((resolve) => setTimeout(resolve, 5000))]);
  logger.info('advertised', { peerId: router.peerId, ready: router.ready(), keys: [...blobs.keys()], stats: router.stats() });
}

process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close();
  void router.close().then(() => process.exit(0));
});
