/** What the webhook needs from the Kubernetes API. */
import type { RegistryCredentials } from '../../shared/distribution/types.ts';

/** The parts of a pod spec that carry pull credentials. */
export interface PodCredentialRefs {
  readonly namespace: string;
  readonly serviceAccountName: string | undefined;
  readonly imagePullSecrets: readonly string[];
}

export interface KubeAccess {
  /**
   * Credentials for `registry` from the pod's imagePullSecrets, then its service
   * account's (dockerconfigjson and dockercfg Secrets), in that order.
   */
  pullCredentials(refs: PodCredentialRefs, registry: string, signal: AbortSignal): Promise<RegistryCredentials[]>;
  /** A namespace's annotations from a watch-fed cache (no API call per review); undefined: unknown. */
  namespaceAnnotations(namespace: string): Readonly<Record<string, string>> | undefined;
  close(): Promise<void>;
}
