/**
 * What a pod asks for through annotations, on the pod or on its namespace. Each
 * key is looked up on its own: the pod's value wins, the namespace's applies
 * when the pod has none.
 */
import type { ResolveMode } from './resolve/types.ts';

export const ANNOTATIONS = {
  /** `upstream`: only the registry (never a peer's possibly stale digest); `peers`: only peers; `auto` (default). */
  resolve: 'shoal.dev/resolve',
  /** `"false"`: leave the pod's images as they are. */
  pin: 'shoal.dev/pin',
  /** Written by the webhook: container name → the image as the pod gave it. */
  originalImages: 'shoal.dev/original-images',
  /** Written by the webhook: container name → `peer`, `upstream` or `cache`. */
  resolvedBy: 'shoal.dev/resolved-by',
} as const;

const MODES: readonly ResolveMode[] = ['auto', 'upstream', 'peers'];

export interface Policy {
  readonly pin: boolean;
  readonly mode: ResolveMode;
  /** Annotation values that were not understood (the default applies), for the review's warnings. */
  readonly warnings: readonly string[];
}

type Annotations = Readonly<Record<string, string>> | undefined;

function lookup(key: string, pod: Annotations, namespace: Annotations): { value: string; on: 'pod' | 'namespace' } | undefined {
  const own = pod?.[key];
  if (own !== undefined) return { value: own, on: 'pod' };
  const inherited = namespace?.[key];
  return inherited === undefined ? undefined : { value: inherited, on: 'namespace' };
}

function quote(value: string): string {
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 37)}...` : value);
}

export function podPolicy(pod: Annotations, namespace: Annotations): Policy {
  const warnings: string[] = [];
  let pin = true;
  const pinValue = lookup(ANNOTATIONS.pin, pod, namespace);
  if (pinValue !== undefined) {
    if (pinValue.value === 'false') pin = false;
    else if (pinValue.value !== 'true') warnings.push(`shoal: ${pinValue.on} annotation ${ANNOTATIONS.pin}=${quote(pinValue.value)} is not "true" or "false"; pinning`);
  }
  let mode: ResolveMode = 'auto';
  const modeValue = lookup(ANNOTATIONS.resolve, pod, namespace);
  if (modeValue !== undefined) {
    if ((MODES as readonly string[]).includes(modeValue.value)) mode = modeValue.value as ResolveMode;
    else warnings.push(`shoal: ${modeValue.on} annotation ${ANNOTATIONS.resolve}=${quote(modeValue.value)} is not one of ${MODES.join(', ')}; using auto`);
  }
  return { pin, mode, warnings };
}
