/**
 * The webhook process's servers, built from parts it is given: the HTTPS
 * admission endpoint with its certificate (files reloaded on change, or a CA of
 * its own whose certificate goes into the webhook configuration's caBundle), and
 * the plain-http ops endpoints.
 */
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { SecureContextOptions } from 'node:tls';
import type { Registry } from 'prom-client';
import { close, listen } from '../shared/http-listen.ts';
import { formatListenAddress, type ListenAddress } from '../shared/listen-address.ts';
import type { Logger } from '../shared/log.ts';
import { createMetricsRegistry } from '../shared/metrics.ts';
import { createOpsHandler } from '../shared/ops-handler.ts';
import { createMutateApp } from './handler.ts';
import type { KubeAccess } from './kube/types.ts';
import { createWebhookMetrics } from './metrics.ts';
import { PodMutator, type RegistryCredentialSource } from './mutate.ts';
import type { ImageResolver } from './resolve/types.ts';
import { CertFiles } from './tls/cert-files.ts';
import { SelfSignedTls } from './tls/self-signed.ts';
import type { KeyPair, TlsSource } from './tls/tls-source.ts';

/** Puts the webhook's CA into the MutatingWebhookConfiguration's caBundle (the Kubernetes side implements it). */
export interface CaBundlePublisher {
  publish(caPem: string): Promise<void>;
}

export type TlsInit =
  | {
      readonly kind: 'files';
      readonly certFile: string;
      readonly keyFile: string;
      /** Re-read period besides change events, in ms. Default 60000. */
      readonly reloadIntervalMs?: number;
    }
  | {
      readonly kind: 'self-signed';
      /** The Service's DNS names (serviceDnsNames). */
      readonly dnsNames: readonly string[];
    };

export interface WebhookInit {
  /** HTTPS address of POST /mutate, e.g. `:8443`. */
  addr: ListenAddress;
  /** Plain-http address of /metrics, /healthz and /readyz, e.g. `:9091`. */
  metricsAddr: ListenAddress;
  tls: TlsInit;
  /** Tags to digests. */
  resolver: ImageResolver;
  /** undefined: no Kubernetes API (pod annotations only; credentials from registryCredentials or none). */
  kube: KubeAccess | undefined;
  /** Self-signed only: where the CA goes; undefined: the CA is logged, for putting into the caBundle by hand. */
  caBundlePublisher: CaBundlePublisher | undefined;
  /** Credentials tried after the pod's (--registry-credentials-file). Default none. */
  registryCredentials?: RegistryCredentialSource;
  /** The time one review may spend resolving images, in ms. Default 2000. */
  resolveBudgetMs?: number;
  /** Where every metric is registered; default a new one (with the process metrics). */
  metricsRegistry?: Registry;
  /** Readiness of the given parts (e.g. the peer network); default always ready. */
  ready?: () => boolean;
  /** First wait before publishing the caBundle again after a failure, in ms; it doubles up to a minute. Default 1000. */
  caBundleRetryMs?: number;
  /** The caBundle is published again this often, mending a configuration re-applied without it, in ms. Default 10 minutes. */
  caBundleRefreshMs?: number;
  logger: Logger;
}

export interface RunningWebhook {
  /** The bound HTTPS port (useful with port 0). */
  readonly port: number;
  readonly metricsPort: number;
  /** Self-signed: the CA that signs the serving certificate. */
  readonly caPem: string | undefined;
  readonly metricsRegistry: Registry;
  close(): Promise<void>;
}

/** A minute is longer than any retry is worth waiting, short enough to heal soon. */
const MAX_RETRY_MS = 60_000;
/**
 * Longer than Go's idle-connection timeout (90 s, the API server's transport): the
 * client closes an idle connection first, so a review never races a server-side close.
 */
const KEEP_ALIVE_MS = 100_000;

export async function createWebhook(init: WebhookInit): Promise<RunningWebhook> {
  const logger = init.logger;
  const metricsRegistry = init.metricsRegistry ?? createMetricsRegistry();
  const metrics = createWebhookMetrics(metricsRegistry);
  const tls: TlsSource =
    init.tls.kind === 'files'
      ? await CertFiles.open({ certFile: init.tls.certFile, keyFile: init.tls.keyFile, reloadIntervalMs: init.tls.reloadIntervalMs, logger })
      : new SelfSignedTls({ dnsNames: init.tls.dnsNames, logger });
  const caPem = tls instanceof SelfSignedTls ? tls.ca.certPem : undefined;

  const mutator = new PodMutator({
    resolver: init.resolver,
    kube: init.kube,
    registryCredentials: init.registryCredentials,
    resolveBudgetMs: init.resolveBudgetMs,
    logger: logger.with({ component: 'mutate' }),
    metrics,
  });
  const secure = (pair: KeyPair): SecureContextOptions => ({ cert: pair.cert, key: pair.key, minVersion: 'TLSv1.2' });
  const server = createHttpsServer(secure(tls.current), createMutateApp({ mutator, metrics, logger }));
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  tls.onRotate((pair) => server.setSecureContext(secure(pair)));

  const publisher = caPem === undefined ? undefined : init.caBundlePublisher;
  let published = publisher === undefined;
  let listening = false;
  const opsServer = createHttpServer(createOpsHandler({ registry: metricsRegistry, ready: () => listening && published && (init.ready?.() ?? true) }));

  let port: number;
  let metricsPort: number;
  try {
    port = await listen(server, init.addr);
    metricsPort = await listen(opsServer, init.metricsAddr);
  } catch (err) {
    tls.close();
    await Promise.all([close(server, 0), close(opsServer, 0)]);
    throw err;
  }
  listening = true;

  let stopPublishing = () => {};
  if (caPem !== undefined && publisher === undefined) {
    logger.warn('caBundle not published (no Kubernetes API): the MutatingWebhookConfiguration must carry this CA', { caBundle: Buffer.from(caPem).toString('base64') });
  }
  if (caPem !== undefined && publisher !== undefined) {
    stopPublishing = keepPublished(publisher, caPem, init, () => (published = true));
  }
  if (init.kube === undefined) {
    logger.info('no Kubernetes API: only pod annotations are read (not namespace ones), and registry credentials come from --registry-credentials-file or none');
  }
  logger.info('webhook serving', {
    addr: formatListenAddress({ ...init.addr, port }),
    metricsAddr: formatListenAddress({ ...init.metricsAddr, port: metricsPort }),
    tls: init.tls.kind,
    kubernetes: init.kube !== undefined,
  });

  return {
    port,
    metricsPort,
    caPem,
    metricsRegistry,
    async close() {
      listening = false;
      stopPublishing();
      tls.close();
      await Promise.all([close(server), close(opsServer)]);
    },
  };
}

/** Publishes now, again after failures (backing off), and again every refresh period. Returns a stop function. */
function keepPublished(publisher: CaBundlePublisher, caPem: string, init: WebhookInit, onPublished: () => void): () => void {
  const firstRetry = init.caBundleRetryMs ?? 1000;
  const refresh = init.caBundleRefreshMs ?? 10 * 60 * 1000;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let retry = firstRetry;
  let everPublished = false;
  const attempt = () => {
    publisher.publish(caPem).then(
      () => {
        if (!everPublished) init.logger.info('caBundle published');
        everPublished = true;
        retry = firstRetry;
        onPublished();
        schedule(refresh);
      },
      (err: unknown) => {
        init.logger.warn('caBundle not published; retrying', { error: err as Error, retryInMs: retry });
        schedule(retry);
        retry = Math.min(retry * 2, MAX_RETRY_MS);
      },
    );
  };
  const schedule = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(attempt, ms);
    timer.unref();
  };
  attempt();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
