/**
 * The AdmissionReviews the bench sends (a pod CREATE as kube-apiserver sends
 * it, two containers) and the check of every answer: a wrong answer fails the
 * bench however fast it came.
 */
import jsonpatch from 'fast-json-patch';
import { createReview, newUid, pod } from '../../../webhook/testing.ts';
import type { ResolvedBy } from '../../../webhook/resolve/types.ts';

type Json = Record<string, unknown>;

/** What a webhook must answer: each container's image pinned, and who resolved it. */
export interface Pinning {
  /** `ref@digest`, one per container, in order. */
  readonly images: readonly string[];
  readonly by: ResolvedBy;
}

export interface ReviewCase {
  readonly uid: string;
  /** The serialized AdmissionReview, ready to send. */
  readonly body: Buffer;
  /** undefined: allowed with no patch (the echo server). */
  readonly expect: Pinning | undefined;
}

export const CONTAINERS = ['app', 'sidecar'] as const;

/** One review of a fresh pod with these images (one per container), under a uid of its own. */
export function reviewCase(images: readonly string[], expect: Pinning | undefined): ReviewCase {
  if (images.length !== CONTAINERS.length) throw new Error(`a bench pod has ${CONTAINERS.length} containers, got ${images.length} images`);
  const uid = newUid();
  const object = pod({ name: `bench-${uid.slice(-6)}`, containers: CONTAINERS.map((name, i) => ({ name, image: images[i] })) });
  return { uid, body: Buffer.from(JSON.stringify(createReview(object, { uid }))), expect };
}

/** What is wrong with an answer, or undefined when it is right. */
export function checkAnswer(c: ReviewCase, status: number, body: Buffer): string | undefined {
  if (status !== 200) return `status ${status}: ${body.toString('utf8').slice(0, 200)}`;
  let review: Json;
  try {
    review = JSON.parse(body.toString('utf8')) as Json;
  } catch {
    return `not JSON: ${body.toString('utf8').slice(0, 200)}`;
  }
  if (review.apiVersion !== 'admission.k8s.io/v1' || review.kind !== 'AdmissionReview') return `not an AdmissionReview v1: ${JSON.stringify(review).slice(0, 200)}`;
  const response = review.response as Json | undefined;
  if (response === undefined) return 'no response';
  if (response.uid !== c.uid) return `uid ${String(response.uid)}, sent ${c.uid}`;
  if (response.allowed !== true) return 'not allowed';
  if (response.warnings !== undefined) return `warnings: ${JSON.stringify(response.warnings)}`;
  if (c.expect === undefined) return response.patch === undefined ? undefined : 'a patch from a no-op server';
  if (response.patchType !== 'JSONPatch' || typeof response.patch !== 'string') return `no JSONPatch (images not pinned): ${JSON.stringify(response).slice(0, 200)}`;

  const sent = (JSON.parse(c.body.toString('utf8')) as { request: { object: Json } }).request.object;
  let patched: Json;
  try {
    const ops = JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8')) as jsonpatch.Operation[];
    patched = jsonpatch.applyPatch(sent, ops, true).newDocument;
  } catch (err) {
    return `patch does not apply: ${(err as Error).message}`;
  }
  const images = ((patched.spec as Json).containers as Json[]).map((container) => container.image);
  if (JSON.stringify(images) !== JSON.stringify(c.expect.images)) return `images ${JSON.stringify(images)}, want ${JSON.stringify(c.expect.images)}`;
  const annotations = (patched.metadata as Json).annotations as Record<string, string> | undefined;
  const by = JSON.parse(annotations?.['shoal.dev/resolved-by'] ?? '{}') as Record<string, string>;
  const want = c.expect.by;
  if (Object.keys(by).length !== CONTAINERS.length || CONTAINERS.some((name) => by[name] !== want)) return `resolved-by ${JSON.stringify(by)}, want ${want} for each container`;
  return undefined;
}
