/**
 * One AdmissionReview for a pod → the answer: every image with a tag resolved
 * to a digest in parallel under one budget, pinned where that worked, left as
 * it is with a warning where it did not. A pod is never refused.
 */
import { ImageRefError, parseImageRef, pinnedRef, type ImageRef } from '../shared/image-ref.ts';
import type { RegistryCredentials } from '../shared/distribution/types.ts';
import { UpstreamError } from '../shared/distribution/types.ts';
import type { Logger } from '../shared/log.ts';
import { CONTAINER_FIELDS, parsePod, type AdmissionRequest, type AdmissionResponse, type ContainerField, type PodView } from './admission.ts';
import type { KubeAccess } from './kube/types.ts';
import { countImage, type WebhookMetrics } from './metrics.ts';
import { podPatch, type ImagePin } from './patch.ts';
import { podPolicy } from './policy.ts';
import { ResolveError, type ImageResolver, type Resolution, type ResolveMode } from './resolve/types.ts';

/** Static credentials for a registry (e.g. from --registry-credentials-file), tried after the pod's own. */
export type RegistryCredentialSource = (registry: string) => readonly RegistryCredentials[];

export interface PodMutatorInit {
  /** Tags to digests. */
  resolver: ImageResolver;
  /** Namespace annotations and pods' pull credentials; undefined: no Kubernetes API, pod annotations only. */
  kube: KubeAccess | undefined;
  /** Credentials tried after the pod's; default: none (anonymous when the pod has none either). */
  registryCredentials?: RegistryCredentialSource;
  /** Time the whole review may spend resolving, in ms; whatever is not resolved by then stays unpinned. Default 2000. */
  resolveBudgetMs?: number;
  logger: Logger;
  metrics: WebhookMetrics;
}

export interface ReviewAnswer {
  readonly response: AdmissionResponse;
  readonly result: 'patched' | 'unchanged';
}

/** Which containers of the review's pod may be pinned, and whether the annotations can be written. */
interface Scope {
  readonly fields: readonly ContainerField[];
  /** Containers (by name) that must stay as they are. */
  readonly frozen: ReadonlySet<string>;
  readonly annotate: boolean;
}

type ImageResult = { readonly ok: true; readonly resolution: Resolution } | { readonly ok: false; readonly outcome: 'unresolved' | 'timeout'; readonly reason: string };

const MAX_WARNING = 256; // the API server may truncate longer warnings
const MAX_SHOWN_IMAGE = 100;
/** The API server keeps 4 KiB of warnings for a request; past this many, one line sums up the rest. */
const MAX_WARNINGS = 10;

export class PodMutator {
  readonly #resolver: ImageResolver;
  readonly #kube: KubeAccess | undefined;
  readonly #staticCredentials: RegistryCredentialSource;
  readonly #budgetMs: number;
  readonly #logger: Logger;
  readonly #metrics: WebhookMetrics;

  constructor(init: PodMutatorInit) {
    this.#resolver = init.resolver;
    this.#kube = init.kube;
    this.#staticCredentials = init.registryCredentials ?? (() => []);
    this.#budgetMs = init.resolveBudgetMs ?? 2000;
    this.#logger = init.logger;
    this.#metrics = init.metrics;
  }

  /**
   * Answers a checked request. `cancel` ends the work early (the caller went away).
   * Throws ReviewError when the pod in the request has the wrong shape.
   */
  async review(request: AdmissionRequest, cancel?: AbortSignal): Promise<ReviewAnswer> {
    const scope = this.#scope(request);
    if (scope === undefined) return unchanged(request.uid, []);
    const pod = parsePod(request.object);
    const log = this.#logger.with({ uid: request.uid, namespace: request.namespace, pod: pod.name });
    const policy = podPolicy(pod.annotations, this.#namespaceAnnotations(request.namespace, log));
    const warnings = [...policy.warnings];
    const slots = imageSlots(pod, scope);
    if (!policy.pin) {
      countImage(this.#metrics, 'skipped', 'none', slots.length);
      return unchanged(request.uid, warnings);
    }

    const timeout = AbortSignal.timeout(this.#budgetMs);
    const signal = cancel === undefined ? timeout : AbortSignal.any([timeout, cancel]);
    const credentials = new Map<string, Promise<readonly RegistryCredentials[]>>();
    const credentialsFor = (registry: string) => {
      let found = credentials.get(registry);
      if (found === undefined) {
        found = this.#credentials(pod, request.namespace, registry, signal, log);
        credentials.set(registry, found);
      }
      return found;
    };
    // Every lookup starts now, in parallel; the same image in several containers is resolved once.
    const lookups = new Map<string, Promise<ImageResult>>();
    const planned = slots.map((slot) => {
      let ref: ImageRef;
      try {
        ref = parseImageRef(slot.image);
      } catch (err) {
        if (!(err instanceof ImageRefError)) throw err;
        // A digest of an algorithm Shoal does not know is still a digest: the image is pinned already.
        if (slot.image.includes('@')) return { slot };
        return { slot, failure: err.message };
      }
      if (ref.digest !== undefined) return { slot };
      let result = lookups.get(slot.image);
      if (result === undefined) {
        result = this.#resolve(ref, policy.mode, credentialsFor, signal, timeout);
        lookups.set(slot.image, result);
      }
      return { slot, ref, result };
    });

    const pins: ImagePin[] = [];
    for (const plan of planned) {
      const { slot } = plan;
      if ('failure' in plan) {
        countImage(this.#metrics, 'unresolved');
        warnings.push(warning(`container "${slot.container}" not pinned: ${plan.failure}`));
        log.warn('image not pinned', { container: slot.container, image: slot.image, reason: plan.failure });
        continue;
      }
      if (plan.result === undefined) {
        countImage(this.#metrics, 'already_pinned');
        continue;
      }
      const outcome = await plan.result;
      if (outcome.ok) {
        countImage(this.#metrics, 'pinned', outcome.resolution.by);
        pins.push({ ...slot, original: slot.image, pinned: pinnedRef(plan.ref, outcome.resolution.digest), by: outcome.resolution.by });
        continue;
      }
      countImage(this.#metrics, outcome.outcome);
      warnings.push(warning(`container "${slot.container}" image "${shorten(slot.image, MAX_SHOWN_IMAGE)}" not pinned: ${outcome.reason}`));
      log.warn('image not pinned', { container: slot.container, image: slot.image, reason: outcome.reason, outcome: outcome.outcome });
    }

    if (warnings.length > MAX_WARNINGS) {
      const rest = warnings.length - (MAX_WARNINGS - 1);
      warnings.splice(MAX_WARNINGS - 1, rest, `shoal: ${rest} more warnings (see the webhook log)`);
    }
    const patch = podPatch(pod, pins, scope.annotate);
    log.debug('review answered', { operation: request.operation, subResource: request.subResource, mode: policy.mode, pinned: pins.length, warnings: warnings.length });
    if (patch.length === 0) return unchanged(request.uid, warnings);
    return {
      result: 'patched',
      response: {
        uid: request.uid,
        allowed: true,
        patchType: 'JSONPatch',
        patch: Buffer.from(JSON.stringify(patch)).toString('base64'),
        ...(warnings.length > 0 ? { warnings } : {}),
      },
    };
  }

  /** Pods on CREATE; on the ephemeralcontainers subresource only the containers the update adds. Anything else passes. */
  #scope(request: AdmissionRequest): Scope | undefined {
    if (request.resource.group !== '' || request.resource.resource !== 'pods') return undefined;
    if (request.operation === 'CREATE' && request.subResource === undefined) {
      return { fields: CONTAINER_FIELDS, frozen: new Set(), annotate: true };
    }
    if (request.operation === 'UPDATE' && request.subResource === 'ephemeralcontainers') {
      // Existing ephemeral containers may not change (the API server refuses the update). And the
      // subresource keeps only spec.ephemeralContainers of the new object (dropNonEphemeralContainerUpdates
      // resets metadata to the old pod's), so annotations written here would be dropped: none are.
      const before = request.oldObject === undefined ? [] : parsePod(request.oldObject, 'request.oldObject').containers.ephemeralContainers;
      return { fields: ['ephemeralContainers'], frozen: new Set(before.map((c) => c.name)), annotate: false };
    }
    return undefined;
  }

  #namespaceAnnotations(namespace: string | undefined, log: Logger): Readonly<Record<string, string>> | undefined {
    if (namespace === undefined || this.#kube === undefined) return undefined;
    try {
      return this.#kube.namespaceAnnotations(namespace);
    } catch (err) {
      log.warn('namespace annotations not read; pod annotations only', { error: err as Error });
      return undefined;
    }
  }

  async #credentials(pod: PodView, namespace: string | undefined, registry: string, signal: AbortSignal, log: Logger): Promise<readonly RegistryCredentials[]> {
    const own: RegistryCredentials[] = [];
    if (this.#kube !== undefined && namespace !== undefined) {
      try {
        own.push(...(await this.#kube.pullCredentials({ namespace, serviceAccountName: pod.serviceAccountName, imagePullSecrets: pod.imagePullSecrets }, registry, signal)));
      } catch (err) {
        // Resolution goes on without them: a public image still resolves.
        if (!signal.aborted) log.warn('pull credentials not read', { registry, error: (err as Error).message });
      }
    }
    return [...own, ...this.#staticCredentials(registry)];
  }

  async #resolve(ref: ImageRef, mode: ResolveMode, credentialsFor: (registry: string) => Promise<readonly RegistryCredentials[]>, signal: AbortSignal, timeout: AbortSignal): Promise<ImageResult> {
    try {
      const resolution = await untilAborted(
        credentialsFor(ref.registry).then((credentials) => this.#resolver.resolve(ref, { mode, credentials, signal })),
        signal,
      );
      return { ok: true, resolution };
    } catch (err) {
      if (timeout.aborted) return { ok: false, outcome: 'timeout', reason: `not resolved within the ${formatMs(this.#budgetMs)} budget` };
      if (signal.aborted) return { ok: false, outcome: 'unresolved', reason: 'the API server stopped waiting' };
      if (err instanceof ResolveError || err instanceof UpstreamError) return { ok: false, outcome: 'unresolved', reason: err.message };
      this.#logger.error('resolver failed unexpectedly', { image: ref.original, error: err as Error });
      return { ok: false, outcome: 'unresolved', reason: 'internal error (see the webhook log)' };
    }
  }
}

interface Slot {
  readonly field: ContainerField;
  readonly index: number;
  readonly container: string;
  readonly image: string;
}

function imageSlots(pod: PodView, scope: Scope): Slot[] {
  const slots: Slot[] = [];
  for (const field of scope.fields) {
    for (const [index, c] of pod.containers[field].entries()) {
      if (c.image !== undefined && !scope.frozen.has(c.name)) slots.push({ field, index, container: c.name, image: c.image });
    }
  }
  return slots;
}

function unchanged(uid: string, warnings: readonly string[]): ReviewAnswer {
  return { result: 'unchanged', response: { uid, allowed: true, ...(warnings.length > 0 ? { warnings } : {}) } };
}

/** Settles with p, or rejects as soon as signal aborts, even when p never settles (a resolver that ignores its signal). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: Error) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

function shorten(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

function warning(text: string): string {
  return shorten(`shoal: ${text}`, MAX_WARNING);
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
