/**
 * Shoal's admission webhook: `node webhook/main.ts [flags]`. Parses flags (env
 * fallbacks SHOAL_*), wires the parts into createWebhook, serves until SIGTERM.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Counter, type Registry } from 'prom-client';
import { DhtRouter } from '../shared/p2p/dht-router.ts';
import { PeerSource } from '../shared/peers/peer-source.ts';
import { UpstreamClient } from '../shared/distribution/client.ts';
import { UsageError, flagsHelp, parseFlags } from '../shared/cli.ts';
import { createLogger, type Logger } from '../shared/log.ts';
import { createMetricsRegistry } from '../shared/metrics.ts';
import { shutdownSignal } from '../shared/shutdown.ts';
import { createPeerMetrics } from '../shared/peers/metrics.ts';
import { readNetworkKeyFile } from '../shared/p2p/network-key.ts';
import { readRegistryCredentialsFile } from '../shared/distribution/docker-config.ts';
import type { ImageResolver } from './resolve/types.ts';
import type { RegistryCredentialSource } from './mutate.ts';
import { Resolver } from './resolve/resolver.ts';
import { TagCache } from './resolve/tag-cache.ts';
import { checkWebhookOptions, webhookFlags, type WebhookOptions } from './options.ts';
import { createKubeAccess, type ClusterAccess } from './kube/access.ts';
import { createWebhook, type CaBundlePublisher } from './server.ts';
import { serviceDnsNames } from './tls/self-signed.ts';

const USAGE = `usage: node webhook/main.ts [flags]

Mutating admission webhook: pins pod images to digests, resolved through the
nodes' mirrors (peers) or the registry (upstream). Serves HTTPS only.

flags:
${flagsHelp(webhookFlags)}
`;

/** What createWebhook is built from besides the options, and what to close after it. */
interface Parts {
  resolver: ImageResolver;
  kube: ClusterAccess | undefined;
  caBundlePublisher: CaBundlePublisher | undefined;
  registryCredentials: RegistryCredentialSource | undefined;
  close(): Promise<void>;
}

/**
 * A client-mode lookup goes over the network rather than to a local provider
 * store (measured on loopback: p99 21-32 ms), so the mirror's 20 ms would miss;
 * a review's budget (2 s) has room for this.
 */
const PEER_RESOLVE_TIMEOUT_MS = 250;

/** Resolver (peers through the DHT, then upstream), Kubernetes access and the caBundle publisher, from the options. */
async function buildParts(options: WebhookOptions, logger: Logger, metricsRegistry: Registry): Promise<Parts> {
  const upstream = new UpstreamClient({
    plainHttpRegistries: options.plainHttpRegistries,
    // An attempt must time out inside the review's budget: a registry that never answers then
    // counts as a failure and opens the circuit, instead of every review waiting out its budget.
    requestTimeoutMs: Math.max(100, Math.floor(options.resolveBudget / 2)),
    logger: logger.with({ component: 'upstream' }),
  });
  let router: DhtRouter | undefined;
  let peers: PeerSource | undefined;
  let dataDir: string | undefined;
  if (options.bootstrapPeers.length > 0 || options.bootstrapDns !== '') {
    // A client only looks up: its identity need not outlive the process (and the root filesystem is read-only).
    dataDir = await mkdtemp(join(tmpdir(), 'shoal-webhook-'));
    router = await DhtRouter.create({
      dataDir,
      logger,
      clientMode: true,
      listen: options.routerAddr,
      networkKey: options.networkKeyFile === '' ? undefined : await readNetworkKeyFile(options.networkKeyFile),
      bootstrapPeers: options.bootstrapPeers,
      bootstrapDns: options.bootstrapDns === '' ? undefined : options.bootstrapDns,
      metrics: metricsRegistry,
    });
    const corrupt = new Counter({ name: 'shoal_webhook_peer_corrupt_total', help: 'Peer answers whose bytes did not match their digest.', labelNames: ['source'], registers: [metricsRegistry] });
    peers = new PeerSource({
      router,
      peerRegistryPort: options.peerRegistryPort,
      resolveTimeoutMs: PEER_RESOLVE_TIMEOUT_MS,
      logger: logger.with({ component: 'peers' }),
      metrics: createPeerMetrics(metricsRegistry, corrupt),
    });
  } else {
    logger.info('no --bootstrap-peers or --bootstrap-dns: resolving upstream only');
  }
  const resolver = new Resolver({ peers, upstream, mutableTags: options.mutableTags, cache: new TagCache({ ttlMs: options.cacheTtl }), logger: logger.with({ component: 'resolver' }) });
  const kube = createKubeAccess({ kubeconfig: options.kubeconfig === '' ? undefined : options.kubeconfig, logger });
  const fileCredentials = options.registryCredentialsFile === '' ? undefined : await readRegistryCredentialsFile(options.registryCredentialsFile);
  return {
    resolver,
    kube,
    caBundlePublisher: options.selfSigned && kube !== undefined ? { publish: (pem) => kube.publishCaBundle(options.webhookConfigName, pem).then(() => undefined) } : undefined,
    registryCredentials: fileCredentials === undefined ? undefined : (registry) => fileCredentials.credentialsFor(registry),
    async close() {
      peers?.close();
      await router?.close();
      if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
      await kube?.close();
    },
  };
}

// kad-dht keeps each provider record's few-byte value as a view into Node's Buffer
// pool, which pins the whole slab (64 KiB in Node 24): with 5000 records that was
// ~130 MiB of external memory; 8 KiB slabs cut it to ~34 MiB (npm run bench).
Buffer.poolSize = 8 * 1024;

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  const options = parseFlags(webhookFlags, args, process.env);
  checkWebhookOptions(options);
  const logger = createLogger({ level: options.logLevel }, { component: 'webhook' });
  const metricsRegistry = createMetricsRegistry();
  const parts = await buildParts(options, logger, metricsRegistry);
  const webhook = await createWebhook({
    addr: options.addr,
    metricsAddr: options.metricsAddr,
    tls: options.selfSigned
      ? { kind: 'self-signed', dnsNames: serviceDnsNames(options.serviceName, options.serviceNamespace) }
      : { kind: 'files', certFile: options.tlsCertFile, keyFile: options.tlsKeyFile, reloadIntervalMs: options.tlsReloadInterval },
    resolver: parts.resolver,
    kube: parts.kube,
    caBundlePublisher: parts.caBundlePublisher,
    registryCredentials: parts.registryCredentials,
    // Namespace annotations decide pinning: serve once they are listed.
    ready: () => parts.kube?.ready ?? true,
    resolveBudgetMs: options.resolveBudget,
    metricsRegistry,
    logger,
  });
  await shutdownSignal(logger);
  await webhook.close();
  await parts.close();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`shoal webhook: ${err.message}\n'node webhook/main.ts --help' lists its flags.\n`);
      process.exit(2);
    }
    process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: 'fatal', component: 'webhook', error: (err as Error).message })}\n`);
    process.exit(1);
  },
);
