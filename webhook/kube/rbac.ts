/**
 * Least privilege for the webhook's ServiceAccount: exactly the API calls
 * webhook/kube makes, as rbac.authorization.k8s.io/v1 PolicyRules (one
 * ClusterRole; pods in any namespace are reviewed).
 *
 *   ""                              secrets                        get          a pod's imagePullSecrets (pull-secrets.ts)
 *   ""                              serviceaccounts                get          its service account's imagePullSecrets (pull-secrets.ts)
 *   ""                              namespaces                     list, watch  namespace annotations (namespace-watch.ts)
 *   admissionregistration.k8s.io    mutatingwebhookconfigurations  get, patch   caBundle, resourceNames: the webhook's own (ca-bundle.ts)
 *
 * Never list or watch on secrets: `get` by name cannot enumerate them. RBAC cannot
 * narrow `get secrets` to a type; a cluster that will not grant it cluster-wide can
 * bind it per namespace (RoleBindings) or not at all: imagePullSecrets are then
 * skipped with a warning, and private images resolve only with credentials the
 * webhook has of its own.
 */

/** An rbac.authorization.k8s.io/v1 PolicyRule. */
export interface PolicyRule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
  readonly resourceNames?: readonly string[];
}

export function webhookPolicyRules(webhookConfigName: string): PolicyRule[] {
  return [
    { apiGroups: [''], resources: ['secrets'], verbs: ['get'] },
    { apiGroups: [''], resources: ['serviceaccounts'], verbs: ['get'] },
    { apiGroups: [''], resources: ['namespaces'], verbs: ['list', 'watch'] },
    {
      apiGroups: ['admissionregistration.k8s.io'],
      resources: ['mutatingwebhookconfigurations'],
      verbs: ['get', 'patch'],
      resourceNames: [webhookConfigName],
    },
  ];
}
