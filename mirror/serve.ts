/** `serve`: the registry API over the node's containerd, and the ops endpoints. */
import { mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { FlagValues } from '../shared/cli.ts';
import { close, listen } from '../shared/http-listen.ts';
import { formatListenAddress } from '../shared/listen-address.ts';
import type { Logger } from '../shared/log.ts';
import { createMetricsRegistry } from '../shared/metrics.ts';
import { createOpsHandler } from '../shared/ops-handler.ts';
import { createMirrorMetrics } from './metrics.ts';
import type { serveFlags } from './options.ts';
import { createRegistryHandler } from './registry/handler.ts';
import { ContainerdStore } from './store/containerd/store.ts';

export type ServeOptions = FlagValues<typeof serveFlags>;

export interface RunningMirror {
  readonly registryPort: number;
  readonly metricsPort: number;
  close(): Promise<void>;
}

export async function serve(options: ServeOptions, logger: Logger): Promise<RunningMirror> {
  await mkdir(options.dataDir, { recursive: true });
  const store = await ContainerdStore.open({
    socket: options.containerdSock,
    namespace: options.containerdNamespace,
    contentPath: options.containerdContentPath === '' ? undefined : options.containerdContentPath,
    logger,
  });
  const metricsRegistry = createMetricsRegistry();
  const metrics = createMirrorMetrics(metricsRegistry);
  const registryServer: Server = createServer(createRegistryHandler({ store, mirroredRegistries: options.mirroredRegistries, logger, metrics }));
  // Keep-alive longer than containerd's idle pool so it reuses connections across a pull.
  registryServer.keepAliveTimeout = 65_000;
  const opsServer = createServer(createOpsHandler({ registry: metricsRegistry, ready: () => true }));
  const registryPort = await listen(registryServer, options.registryAddr);
  const metricsPort = await listen(opsServer, options.metricsAddr);
  logger.info('mirror serving', {
    registryAddr: formatListenAddress({ ...options.registryAddr, port: registryPort }),
    metricsAddr: formatListenAddress({ ...options.metricsAddr, port: metricsPort }),
    mirroredRegistries: options.mirroredRegistries.map((r) => r.host),
  });
  return {
    registryPort,
    metricsPort,
    async close() {
      await Promise.all([close(registryServer), close(opsServer)]);
      await store.close();
    },
  };
}
