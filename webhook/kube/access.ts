/**
 * The webhook's access to the Kubernetes API, over @kubernetes/client-node: pull
 * credentials (pull-secrets.ts), namespace annotations (namespace-watch.ts) and
 * the CA bundle publisher (ca-bundle.ts), from a kubeconfig file or the pod's
 * in-cluster service account. The verbs it needs are in rbac.ts.
 */
import { existsSync } from 'node:fs';
import { AdmissionregistrationV1Api, CoreV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
import type { Logger } from '../../shared/log.ts';
import { publishCaBundle, type CaBundleOutcome } from './ca-bundle.ts';
import { NamespaceWatch } from './namespace-watch.ts';
import { PullSecrets } from './pull-secrets.ts';
import type { KubeAccess } from './types.ts';

export interface KubeAccessInit {
  /** A kubeconfig file (`--kubeconfig`); without one, the pod's in-cluster config, if it runs in a pod. */
  kubeconfig?: string;
  logger: Logger;
  /** How long Secrets and ServiceAccounts are reused. Default 30 s. */
  cacheTtlMs?: number;
  /** Most Secrets (and, apart, ServiceAccounts) cached. Default 1000. */
  cacheMaxEntries?: number;
  /** Limit of one Secret or ServiceAccount read. Default 5 s. */
  requestTimeoutMs?: number;
  /** First wait after a namespace list or watch failure; doubles per failure in a row. Default 500 ms. */
  retryDelayMs?: number;
  /** Longest such wait. Default 30 s. */
  maxRetryDelayMs?: number;
  /** Prefix of the in-cluster files (`/var/run/secrets/kubernetes.io/serviceaccount/...`), for tests. Default ''. */
  inClusterRoot?: string;
}

/** KubeAccess, and what the webhook server needs beside it. */
export interface ClusterAccess extends KubeAccess {
  /** True once namespaces were listed: namespaceAnnotations answers from then on. */
  readonly ready: boolean;
  /** Sets clientConfig.caBundle of every webhook of the MutatingWebhookConfiguration; throws KubeApiError saying why not. */
  publishCaBundle(webhookConfigName: string, caPem: string, signal?: AbortSignal): Promise<CaBundleOutcome>;
}

const TOKEN_PATH = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * Undefined when there is nothing to connect with (no --kubeconfig, not in a
 * pod): the webhook then works from pod annotations alone. Throws when the given
 * kubeconfig cannot be loaded. Starts the namespace watch.
 */
export function createKubeAccess(init: KubeAccessInit): ClusterAccess | undefined {
  const logger = init.logger.with({ component: 'kube' });
  const kc = loadKubeConfig(init);
  if (!kc) {
    logger.info('no Kubernetes API config (no --kubeconfig, not in a pod): pod annotations only, no namespace annotations or imagePullSecrets');
    return undefined;
  }
  logger.info('Kubernetes API', { server: kc.getCurrentCluster()?.server, source: init.kubeconfig ? 'kubeconfig' : 'in-cluster' });
  const core = kc.makeApiClient(CoreV1Api);
  const admission = kc.makeApiClient(AdmissionregistrationV1Api);
  const secrets = new PullSecrets({
    core,
    logger,
    cacheTtlMs: init.cacheTtlMs,
    cacheMaxEntries: init.cacheMaxEntries,
    requestTimeoutMs: init.requestTimeoutMs,
  });
  const namespaces = new NamespaceWatch({
    core,
    watch: new Watch(kc),
    logger,
    retryDelayMs: init.retryDelayMs,
    maxRetryDelayMs: init.maxRetryDelayMs,
  });
  namespaces.start();
  return {
    get ready() {
      return namespaces.ready;
    },
    pullCredentials: (refs, registry, signal) => secrets.credentials(refs, registry, signal),
    namespaceAnnotations: (namespace) => namespaces.annotations(namespace),
    publishCaBundle: (name, caPem, signal) => publishCaBundle(admission, name, caPem, logger, signal),
    close: () => namespaces.close(),
  };
}

function loadKubeConfig(init: KubeAccessInit): KubeConfig | undefined {
  const kc = new KubeConfig();
  if (init.kubeconfig !== undefined) {
    try {
      kc.loadFromFile(init.kubeconfig);
    } catch (err) {
      throw new Error(`cannot load kubeconfig ${init.kubeconfig}: ${(err as Error).message}`);
    }
    if (!kc.getCurrentCluster()) throw new Error(`kubeconfig ${init.kubeconfig}: no current context with a cluster`);
    return kc;
  }
  const root = init.inClusterRoot ?? '';
  // What loadFromCluster reads; without them it would build `https://undefined:undefined`.
  if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT || !existsSync(`${root}${TOKEN_PATH}`)) return undefined;
  kc.loadFromCluster(root);
  return kc;
}
