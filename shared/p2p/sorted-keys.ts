/**
 * A set of strings kept in the order of `<` (UTF-16 code units, the order
 * `startsWith` agrees with), so the strings starting with a prefix are
 * adjacent: a binary search finds the first, a walk collects the rest.
 *
 * The strings sit in a list of sorted chunks, split in two past
 * 2 × `chunkSize` entries and merged with a neighbour when both fit in
 * `chunkSize`, so an insert or delete moves one chunk's entries, not the
 * whole set's.
 */
export class SortedKeys {
  readonly #chunkSize: number;
  /** Non-empty, sorted, and every key of a chunk is below every key of the next. */
  readonly #chunks: string[][] = [];
  #size = 0;

  /** chunkSize: entries a chunk is split back to once it outgrows twice that. Default 512. */
  constructor(chunkSize = 512) {
    if (!(Number.isInteger(chunkSize) && chunkSize >= 1)) throw new Error(`chunk size ${chunkSize} must be a positive integer`);
    this.#chunkSize = chunkSize;
  }

  get size(): number {
    return this.#size;
  }

  /** Adds key; false if it was there already. */
  add(key: string): boolean {
    const chunks = this.#chunks;
    let [c, i] = this.#locate(key, true);
    if (c === chunks.length) {
      if (c === 0) {
        chunks.push([key]);
        this.#size++;
        return true;
      }
      // Above every key: append to the last chunk.
      c--;
      i = chunks[c]!.length;
    }
    const chunk = chunks[c]!;
    if (chunk[i] === key) return false;
    chunk.splice(i, 0, key);
    this.#size++;
    if (chunk.length > 2 * this.#chunkSize) chunks.splice(c + 1, 0, chunk.splice(this.#chunkSize));
    return true;
  }

  /** Removes key; false if it was not there. */
  delete(key: string): boolean {
    const chunks = this.#chunks;
    const [c, i] = this.#locate(key, true);
    const chunk = chunks[c];
    if (chunk?.[i] !== key) return false;
    chunk.splice(i, 1);
    this.#size--;
    if (chunk.length === 0) {
      chunks.splice(c, 1);
      return true;
    }
    // Merge with a neighbour while both fit in one chunk, so deletes do not leave many tiny chunks.
    const prev = chunks[c - 1];
    const next = chunks[c + 1];
    const into = prev !== undefined && prev.length + chunk.length <= this.#chunkSize ? c - 1
      : next !== undefined && chunk.length + next.length <= this.#chunkSize ? c
        : -1;
    if (into >= 0) {
      chunks[into]!.push(...chunks[into + 1]!);
      chunks.splice(into + 1, 1);
    }
    return true;
  }

  /**
   * Up to `max` keys starting with `prefix`, in order, from the first one
   * (or the first one above `after`, to go on from an earlier call).
   * Visits only the keys it returns, after an O(log n) search.
   */
  startingWith(prefix: string, max: number, after?: string): string[] {
    const found: string[] = [];
    const chunks = this.#chunks;
    let [c, i] = after === undefined || after < prefix ? this.#locate(prefix, true) : this.#locate(after, false);
    for (; c < chunks.length; c++, i = 0) {
      const chunk = chunks[c]!;
      for (; i < chunk.length; i++) {
        if (found.length >= max) return found;
        const key = chunk[i]!;
        if (!key.startsWith(prefix)) return found;
        found.push(key);
      }
    }
    return found;
  }

  /**
   * [chunk, index] of the first key >= key (> key unless inclusive);
   * [chunks.length, 0] when there is none.
   */
  #locate(key: string, inclusive: boolean): [number, number] {
    const chunks = this.#chunks;
    const below = inclusive ? (k: string) => k < key : (k: string) => k <= key;
    let lo = 0;
    let hi = chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (below(chunks[mid]!.at(-1)!)) lo = mid + 1;
      else hi = mid;
    }
    const chunk = chunks[lo];
    if (chunk === undefined) return [lo, 0];
    let first = 0;
    let last = chunk.length;
    while (first < last) {
      const mid = (first + last) >>> 1;
      if (below(chunk[mid]!)) first = mid + 1;
      else last = mid;
    }
    return [lo, first];
  }
}
