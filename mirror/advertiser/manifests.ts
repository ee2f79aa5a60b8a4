/**
 * What a manifest or index refers to, read through the mirror's ContentStore
 * (so checked against its digest, as the registry handler checks it before
 * serving) and remembered by digest: content is immutable, so a resync reads
 * only manifests it has not seen.
 */
import { parseDigest } from '../../shared/digest.ts';
import { manifestMediaType, MAX_MANIFEST_BYTES } from '../../shared/media-types.ts';
import { ContentMismatchError } from '../../shared/verify.ts';
import { readAll, type ContentStore, type Descriptor } from '../store/store.ts';

/**
 * The descriptors in manifest bytes: an index's manifests, a manifest's config
 * and layers. undefined: not a manifest the registry handler would serve.
 * Entries without a usable digest or size are left out: nothing could fetch them.
 */
export function manifestChildren(bytes: Uint8Array): Descriptor[] | undefined {
  if (manifestMediaType(bytes) === undefined) return undefined;
  // manifestMediaType parsed it already: valid JSON, an object with schemaVersion 2.
  const doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) as Record<string, unknown>;
  const entries = Array.isArray(doc['manifests']) ? (doc['manifests'] as unknown[]) : [doc['config'], ...(Array.isArray(doc['layers']) ? (doc['layers'] as unknown[]) : [])];
  const out: Descriptor[] = [];
  for (const entry of entries) {
    const descriptor = toDescriptor(entry);
    if (descriptor !== undefined) out.push(descriptor);
  }
  return out;
}

function toDescriptor(value: unknown): Descriptor | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { mediaType, digest, size } = value as { mediaType?: unknown; digest?: unknown; size?: unknown };
  if (typeof digest !== 'string' || typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return undefined;
  try {
    return { mediaType: typeof mediaType === 'string' ? mediaType : '', digest: parseDigest(digest), size };
  } catch {
    return undefined;
  }
}

/** Errors that mean "this content cannot be served", as opposed to "containerd could not be asked". */
function isUnservable(err: unknown): boolean {
  return err instanceof ContentMismatchError || (err as { code?: unknown } | undefined)?.code === 'ENOENT';
}

export interface ManifestReaderInit {
  /** Reads content checked against its digest. */
  store: ContentStore;
  /** Manifests whose children are remembered, least recently used dropped first. Default 10000. */
  maxEntries?: number;
}

export class ManifestReader {
  readonly #store: ContentStore;
  readonly #maxEntries: number;
  /** Map order is recency order: a hit moves its entry to the end. */
  readonly #cache = new Map<string, readonly Descriptor[]>();
  /** Manifests read from the store (cache misses), for tests and logs. */
  reads = 0;

  constructor(init: ManifestReaderInit) {
    this.#store = init.store;
    this.#maxEntries = init.maxEntries ?? 10_000;
  }

  /**
   * The descriptors a manifest or index refers to. undefined when it cannot be
   * served: gone, too large, not matching its digest, or not a manifest. Any
   * other error (containerd unreachable) is thrown: the caller must not take
   * it for an absence.
   */
  async children(descriptor: Descriptor): Promise<readonly Descriptor[] | undefined> {
    const cached = this.#cache.get(descriptor.digest.text);
    if (cached !== undefined) {
      this.#cache.delete(descriptor.digest.text);
      this.#cache.set(descriptor.digest.text, cached);
      return cached;
    }
    if (descriptor.size > MAX_MANIFEST_BYTES) return undefined;
    let bytes: Buffer;
    try {
      this.reads++;
      bytes = await readAll(this.#store, descriptor.digest, descriptor.size);
    } catch (err) {
      if (isUnservable(err)) return undefined;
      throw err;
    }
    const children = manifestChildren(bytes);
    // Only good manifests are remembered: corrupt content may be removed and pulled again.
    if (children === undefined) return undefined;
    this.#cache.set(descriptor.digest.text, children);
    if (this.#cache.size > this.#maxEntries) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
    return children;
  }

  /** Manifests remembered now. */
  get cached(): number {
    return this.#cache.size;
  }
}
