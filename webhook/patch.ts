/**
 * The JSON Patch (RFC 6902) that pins a pod's images and records what was done
 * in its annotations. Paths are JSON Pointers (RFC 6901): `~` and `/` inside a
 * segment are written `~0` and `~1`, so `shoal.dev/original-images` becomes
 * `shoal.dev~1original-images`.
 */
import type { ContainerField, PodView } from './admission.ts';
import { ANNOTATIONS } from './policy.ts';
import type { ResolvedBy } from './resolve/types.ts';

export interface JsonPatchOperation {
  readonly op: 'add' | 'replace';
  readonly path: string;
  readonly value: unknown;
}

export function jsonPointer(segments: readonly (string | number)[]): string {
  return segments.map((s) => `/${String(s).replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
}

/** One image the webhook replaces. */
export interface ImagePin {
  readonly field: ContainerField;
  /** Position in the field's list, as the review's object has it. */
  readonly index: number;
  readonly container: string;
  readonly original: string;
  readonly pinned: string;
  readonly by: ResolvedBy;
}

/** An earlier record of ours (a reinvoked webhook, a copied annotation), kept and extended; anything else is replaced. */
function existingRecord(value: string | undefined): Record<string, string> {
  if (value === undefined) return {};
  try {
    const parsed: unknown = JSON.parse(value);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return {};
    return Object.fromEntries(Object.entries(parsed).filter((e): e is [string, string] => typeof e[1] === 'string'));
  } catch {
    return {};
  }
}

/**
 * Operations replacing each pinned image and, when `annotate`, adding the
 * original-images and resolved-by records. Empty when there is nothing to pin.
 */
export function podPatch(pod: PodView, pins: readonly ImagePin[], annotate: boolean): JsonPatchOperation[] {
  if (pins.length === 0) return [];
  const ops: JsonPatchOperation[] = pins.map((pin) => ({ op: 'replace', path: jsonPointer(['spec', pin.field, pin.index, 'image']), value: pin.pinned }));
  if (!annotate) return ops;
  const originals = existingRecord(pod.annotations?.[ANNOTATIONS.originalImages]);
  const resolvedBy = existingRecord(pod.annotations?.[ANNOTATIONS.resolvedBy]);
  for (const pin of pins) {
    originals[pin.container] = pin.original;
    resolvedBy[pin.container] = pin.by;
  }
  const records: Record<string, string> = {
    [ANNOTATIONS.originalImages]: JSON.stringify(originals),
    [ANNOTATIONS.resolvedBy]: JSON.stringify(resolvedBy),
  };
  if (!pod.hasMetadata) {
    ops.push({ op: 'add', path: '/metadata', value: { annotations: records } });
  } else if (pod.annotations === undefined) {
    ops.push({ op: 'add', path: '/metadata/annotations', value: records });
  } else {
    for (const [key, value] of Object.entries(records)) {
      // add on an existing member replaces it (RFC 6902 4.1), so one op fits both cases; replace says what happens.
      ops.push({ op: key in pod.annotations ? 'replace' : 'add', path: jsonPointer(['metadata', 'annotations', key]), value });
    }
  }
  return ops;
}
