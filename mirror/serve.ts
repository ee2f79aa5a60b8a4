/**
 * `serve`: the registry API over the node's containerd, peers found through the
 * DHT for what the node lacks, upstream (one download per blob for the
 * cluster) for what no node has, the advertiser that tells the DHT what the node
 * holds, and the ops endpoints.
 */
import { mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { join } from 'node:path';
import { UpstreamClient } from '../shared/distribution/client.ts';
import { http1Fetch } from '../shared/distribution/http1-fetch.ts';
import { Http1Client } from '../shared/http1/client.ts';
import { readRegistryCredentialsFile } from '../shared/distribution/docker-config.ts';
import type { FlagValues } from '../shared/cli.ts';
import { close, listen } from '../shared/http-listen.ts';
import { formatListenAddress } from '../shared/listen-address.ts';
import type { Logger } from '../shared/log.ts';
import { createMetricsRegistry } from '../shared/metrics.ts';
import { createOpsHandler } from '../shared/ops-handler.ts';
import { DhtRouter } from '../shared/p2p/dht-router.ts';
import { readNetworkKeyFile } from '../shared/p2p/network-key.ts';
import { Advertiser } from './advertiser/advertiser.ts';
import { createMirrorMetrics, registerSpoolBytes, type MirrorMetrics } from './metrics.ts';
import type { serveFlags } from './options.ts';
import { PeerSource } from '../shared/peers/peer-source.ts';
import { createRegistryHandler } from './registry/handler.ts';
import { ContainerdStore } from './store/containerd/store.ts';
import { Spool } from './spool/spool.ts';
import { isResumableUpstreamFailure } from './spool/upstream-source.ts';
import { UpstreamFallback } from './upstream/fallback.ts';

export type ServeOptions = FlagValues<typeof serveFlags>;

export interface RunningMirror {
  readonly registryPort: number;
  readonly metricsPort: number;
  readonly peerId: string;
  close(): Promise<void>;
}

export async function serve(options: ServeOptions, logger: Logger): Promise<RunningMirror> {
  await mkdir(options.dataDir, { recursive: true });
  const metricsRegistry = createMetricsRegistry();
  const metrics = createMirrorMetrics(metricsRegistry);
  const store = await ContainerdStore.open({
    socket: options.containerdSock,
    namespace: options.containerdNamespace,
    contentPath: options.containerdContentPath === '' ? undefined : options.containerdContentPath,
    logger,
    checks: { rememberMs: options.contentCheckTtl },
    onCheck: (use) => metrics.contentChecks.inc({ use }),
  });
  const router = await DhtRouter.create({
    dataDir: options.dataDir,
    logger,
    listen: options.routerAddr,
    networkKey: options.networkKeyFile === '' ? undefined : await readNetworkKeyFile(options.networkKeyFile),
    bootstrapPeers: options.bootstrapPeers,
    bootstrapDns: options.bootstrapDns === '' ? undefined : options.bootstrapDns,
    advertiseTtlMs: options.advertiseTtl,
    metrics: metricsRegistry,
  });
  const peers = new PeerSource({
    router,
    peerRegistryPort: options.peerRegistryPort,
    resolveTimeoutMs: options.resolveTimeout,
    resolveRetries: options.resolveRetries,
    peerIdleTimeoutMs: options.peerIdleTimeout,
    logger: logger.with({ component: 'peers' }),
    metrics,
  });
  const upstream = options.upstreamFallback ? await startUpstreamFallback(options, router, peers, metricsRegistry, metrics, logger) : undefined;
  const registryServer: Server = createServer(createRegistryHandler({ store, mirroredRegistries: options.mirroredRegistries, logger, metrics, peers, upstream: upstream?.fallback }));
  // Keep-alive longer than containerd's idle pool so it reuses connections across a pull.
  registryServer.keepAliveTimeout = 65_000;
  const opsServer = createServer(createOpsHandler({ registry: metricsRegistry, ready: () => router.ready() }));
  const registryPort = await listen(registryServer, options.registryAddr);
  const metricsPort = await listen(opsServer, options.metricsAddr);
  const advertiser = new Advertiser({ containerd: store.client, store, router, mirroredRegistries: options.mirroredRegistries, logger: logger.with({ component: 'advertiser' }) });
  await advertiser.start();
  logger.info('mirror serving', {
    registryAddr: formatListenAddress({ ...options.registryAddr, port: registryPort }),
    metricsAddr: formatListenAddress({ ...options.metricsAddr, port: metricsPort }),
    peerId: router.peerId,
    mirroredRegistries: options.mirroredRegistries.map((r) => r.host),
  });
  return {
    registryPort,
    metricsPort,
    peerId: router.peerId,
    async close() {
      await advertiser.stop();
      await Promise.all([close(registryServer), close(opsServer)]);
      peers.close();
      upstream?.fallback.close();
      upstream?.blobs.close();
      await upstream?.spool.close();
      await router.close();
      await store.close();
    },
  };
}

async function startUpstreamFallback(
  options: ServeOptions,
  router: DhtRouter,
  peers: PeerSource,
  metricsRegistry: Registry,
  metrics: MirrorMetrics,
  logger: Logger,
): Promise<{ fallback: UpstreamFallback; spool: Spool; blobs: Http1Client }> {
  const log = logger.with({ component: 'upstream' });
  const credentials = options.registryCredentialsFile === '' ? undefined : await readRegistryCredentialsFile(options.registryCredentialsFile);
  const spool = await Spool.open({ dir: join(options.dataDir, 'spool'), maxBytes: options.spoolMaxBytes, isResumable: isResumableUpstreamFailure, logger: log });
  registerSpoolBytes(metricsRegistry, () => spool.usedBytes);
  // Its own idle limit only backs up the callers' (--upstream-idle-timeout cuts a silent body first).
  const blobs = new Http1Client({ idleTimeoutMs: options.upstreamIdleTimeout * 2 });
  // Our client speaks to servers directly: behind an egress proxy, blobs go through fetch, which can use it.
  const proxied = ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'].some((name) => (process.env[name] ?? '') !== '');
  if (proxied) log.info('a proxy is configured: blobs are fetched with Node fetch (NODE_USE_ENV_PROXY=1 makes it use the proxy)');
  const client = new UpstreamClient({
    plainHttpRegistries: options.mirroredRegistries.filter((r) => r.upstream.protocol === 'http:').map((r) => r.host),
    blobFetch: proxied ? undefined : http1Fetch(blobs, globalThis.fetch),
    logger: log,
  });
  const fallback = new UpstreamFallback({
    client,
    spool,
    credentials,
    selfId: router.peerId,
    peers: router,
    quarantine: peers,
    peerRegistryPort: options.peerRegistryPort,
    upstreamIdleTimeoutMs: options.upstreamIdleTimeout,
    peerIdleTimeoutMs: options.peerIdleTimeout,
    logger: log,
    metrics,
  });
  return { fallback, spool, blobs };
}
