/** A ContentStore in memory: for handler tests, and as the simplest reading of the contract. */
import type { Digest } from '../../shared/digest.ts';
import { verifiedSlice, type Slice } from '../../shared/verify.ts';
import type { ContentStore, Descriptor, TagKey } from './store.ts';

export class MemoryStore implements ContentStore {
  readonly #tags = new Map<string, Descriptor>();
  readonly #content = new Map<string, Uint8Array>();
  /** Bytes per chunk that read() yields, so tests can cross chunk boundaries. */
  chunkSize = 7;

  put(digest: Digest, bytes: Uint8Array): void {
    this.#content.set(digest.text, bytes);
  }

  tag(key: TagKey, descriptor: Descriptor): void {
    this.#tags.set(`${key.registry}/${key.name}:${key.tag}`, descriptor);
  }

  resolveTag(key: TagKey): Promise<Descriptor | undefined> {
    return Promise.resolve(this.#tags.get(`${key.registry}/${key.name}:${key.tag}`));
  }

  size(digest: Digest): Promise<number | undefined> {
    return Promise.resolve(this.#content.get(digest.text)?.length);
  }

  read(digest: Digest, size: number, slice?: Slice): AsyncIterable<Uint8Array> {
    return verifiedSlice(this.#chunks(digest), digest, size, slice);
  }

  async *#chunks(digest: Digest): AsyncGenerator<Uint8Array> {
    const bytes = this.#content.get(digest.text);
    if (bytes === undefined) throw new Error(`${digest.text} not found`);
    for (let i = 0; i < bytes.length; i += this.chunkSize) {
      await Promise.resolve();
      yield bytes.subarray(i, i + this.chunkSize);
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
