/**
 * A pod's pull credentials for one registry: its imagePullSecrets, then its
 * service account's, read from the API and parsed as Docker config. Secrets and
 * service accounts are cached briefly, so a burst of reviews makes one read each.
 *
 * Nothing here fails a review: a Secret or ServiceAccount that is missing (404),
 * forbidden (403), of another type or unreadable is skipped with a log line
 * (once per cache period), and an API that does not answer costs that Secret only.
 */
import type { CoreV1Api, V1Secret } from '@kubernetes/client-node';
import { parseDockerConfig, type DockerConfigKind, type RegistryCredentialLookup } from '../../shared/distribution/docker-config.ts';
import type { RegistryCredentials } from '../../shared/distribution/types.ts';
import type { Logger } from '../../shared/log.ts';
import { describeApiError, raceSignal, withSignal } from './api.ts';
import { TtlCache } from './ttl-cache.ts';
import type { PodCredentialRefs } from './types.ts';

export interface PullSecretsInit {
  core: CoreV1Api;
  logger: Logger;
  /** How long a Secret or ServiceAccount read (or its absence) is reused. Default 30 s. */
  cacheTtlMs?: number;
  /** Most Secrets and, apart, ServiceAccounts kept. Default 1000. */
  cacheMaxEntries?: number;
  /** Limit of one API call, which every review waiting on it shares. Default 5 s. */
  requestTimeoutMs?: number;
}

/** Secret types whose content is Docker config, and the data key holding it. */
const DOCKER_CONFIG_TYPES: Record<string, { kind: DockerConfigKind; key: string }> = {
  'kubernetes.io/dockerconfigjson': { kind: 'dockerconfigjson', key: '.dockerconfigjson' },
  'kubernetes.io/dockercfg': { kind: 'dockercfg', key: '.dockercfg' },
};

/** A Secret or ServiceAccount the API answered 404 or 403 for: remembered like a found one. */
const SKIPPED_STATUSES = new Set([403, 404]);

export class PullSecrets {
  readonly #core: CoreV1Api;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #secrets: TtlCache<RegistryCredentialLookup | undefined>;
  readonly #accounts: TtlCache<readonly string[]>;

  constructor(init: PullSecretsInit) {
    this.#core = init.core;
    this.#log = init.logger;
    this.#timeoutMs = init.requestTimeoutMs ?? 5000;
    const cache = { ttlMs: init.cacheTtlMs ?? 30_000, maxEntries: init.cacheMaxEntries ?? 1000 };
    this.#secrets = new TtlCache(cache);
    this.#accounts = new TtlCache(cache);
  }

  /** See KubeAccess.pullCredentials. Rejects only with signal.reason, when the signal aborts. */
  async credentials(refs: PodCredentialRefs, registry: string, signal: AbortSignal): Promise<RegistryCredentials[]> {
    signal.throwIfAborted();
    const { namespace } = refs;
    // The pod's Secrets are read while its service account is: both are usually cached anyway.
    const reads = new Map<string, Promise<RegistryCredentialLookup | undefined>>();
    for (const name of refs.imagePullSecrets) if (!reads.has(name)) reads.set(name, this.#secret(namespace, name));
    const accountSecrets = await raceSignal(this.#accountSecrets(namespace, refs.serviceAccountName || 'default'), signal);
    for (const name of accountSecrets) if (!reads.has(name)) reads.set(name, this.#secret(namespace, name));
    const lookups = await raceSignal(Promise.all(reads.values()), signal);

    const found: RegistryCredentials[] = [];
    const seen = new Set<string>();
    for (const lookup of lookups) {
      for (const credentials of lookup?.credentialsFor(registry) ?? []) {
        const key = credentials.kind === 'basic' ? `basic\0${credentials.username}\0${credentials.password}` : `token\0${credentials.token}`;
        if (seen.has(key)) continue;
        seen.add(key);
        found.push(credentials);
      }
    }
    this.#log.debug('pull credentials', { namespace, registry, secrets: reads.size, credentials: found.length });
    return found;
  }

  /** A Secret's Docker config; undefined when it is skipped. Never rejects. */
  #secret(namespace: string, name: string): Promise<RegistryCredentialLookup | undefined> {
    return this.#secrets.get(`${namespace}/${name}`, () => this.#readSecret(namespace, name)).catch((err: unknown) => {
      this.#log.warn('image pull secret skipped: API call failed', { namespace, secret: name, ...describeApiError(err) });
      return undefined;
    });
  }

  /** Names of a service account's imagePullSecrets; none when it is skipped. Never rejects. */
  #accountSecrets(namespace: string, name: string): Promise<readonly string[]> {
    return this.#accounts.get(`${namespace}/${name}`, () => this.#readAccount(namespace, name)).catch((err: unknown) => {
      this.#log.warn('service account skipped: API call failed', { namespace, serviceAccount: name, ...describeApiError(err) });
      return [];
    });
  }

  /** Resolves undefined for what is remembered as skipped; rejects (not cached) when the API did not answer usefully. */
  async #readSecret(namespace: string, name: string): Promise<RegistryCredentialLookup | undefined> {
    let secret: V1Secret;
    try {
      secret = await this.#core.readNamespacedSecret({ name, namespace }, withSignal(AbortSignal.timeout(this.#timeoutMs)));
    } catch (err) {
      const failure = describeApiError(err);
      if (failure.status === undefined || !SKIPPED_STATUSES.has(failure.status)) throw err;
      this.#log.warn('image pull secret skipped', { namespace, secret: name, ...failure });
      return undefined;
    }
    const type = secret.type ?? '';
    const format = DOCKER_CONFIG_TYPES[type];
    if (!format) {
      this.#log.debug('image pull secret ignored: not a Docker config type', { namespace, secret: name, type });
      return undefined;
    }
    const data = secret.data?.[format.key];
    if (data === undefined) {
      this.#log.warn('image pull secret skipped: no data', { namespace, secret: name, type, key: format.key });
      return undefined;
    }
    try {
      return parseDockerConfig(Buffer.from(data, 'base64').toString('utf8'), format.kind);
    } catch (err) {
      // The parser's messages name entries, never their secrets.
      this.#log.warn('image pull secret skipped: unreadable', { namespace, secret: name, type, error: (err as Error).message });
      return undefined;
    }
  }

  async #readAccount(namespace: string, name: string): Promise<readonly string[]> {
    try {
      const account = await this.#core.readNamespacedServiceAccount({ name, namespace }, withSignal(AbortSignal.timeout(this.#timeoutMs)));
      return (account.imagePullSecrets ?? []).flatMap((ref) => (ref.name ? [ref.name] : []));
    } catch (err) {
      const failure = describeApiError(err);
      if (failure.status === undefined || !SKIPPED_STATUSES.has(failure.status)) throw err;
      this.#log.warn('service account skipped', { namespace, serviceAccount: name, ...failure });
      return [];
    }
  }
}
