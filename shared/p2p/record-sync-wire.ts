/**
 * The wire format of `/shoal/records/1.0.0` (record-sync.ts), and the set of
 * keys a node sends on it.
 *
 * Request, 33 bytes: version 1, then the fingerprint of the asker's last full
 * copy of the answerer's keys (32 zero bytes: send them all).
 * Answer: a 42-byte header (version 1; flags: 1 "you are in my routing
 * table", 2 "keys follow"; the answerer's routing table size and key count,
 * u32 big-endian; the fingerprint of its keys), then, when flag 2 is set,
 * each key's 32-byte SHA-256 (the multihash digest of its CID, cid.ts).
 * Keys follow unless the asker sent the answerer's fingerprint.
 *
 * The fingerprint is the XOR of the keys' digests: kept up to date per key,
 * the same whatever the order.
 */
import { keyDigest } from './cid.ts';

export const SYNC_VERSION = 1;
export const DIGEST_BYTES = 32;
export const REQUEST_BYTES = 1 + DIGEST_BYTES;
export const HEADER_BYTES = 1 + 1 + 4 + 4 + DIGEST_BYTES;

const FLAG_IN_TABLE = 1;
const FLAG_KEYS = 2;

export class SyncProtocolError extends Error {
  override name = 'SyncProtocolError';
}

/** What an answer's header says. */
export interface SyncHeader {
  /** The asker is in the answerer's routing table, so the answerer's provides reach it. */
  readonly inTable: boolean;
  readonly tableSize: number;
  readonly count: number;
  readonly fingerprint: Uint8Array;
  /** Whether `count` digests follow (the asker's copy was not current). */
  readonly keysFollow: boolean;
}

/** The keys a node advertises, as digests, with their fingerprint. */
export class KeyDigests {
  readonly #digests = new Map<string, Uint8Array>();
  readonly #fingerprint = new Uint8Array(DIGEST_BYTES);

  get size(): number {
    return this.#digests.size;
  }

  /** A copy: the set changes under a caller that keeps it. */
  get fingerprint(): Uint8Array {
    return this.#fingerprint.slice();
  }

  add(key: string): void {
    if (this.#digests.has(key)) return;
    const digest = keyDigest(key);
    this.#digests.set(key, digest);
    xorInto(this.#fingerprint, digest);
  }

  delete(key: string): void {
    const digest = this.#digests.get(key);
    if (digest === undefined) return;
    this.#digests.delete(key);
    xorInto(this.#fingerprint, digest);
  }

  digests(): IterableIterator<Uint8Array> {
    return this.#digests.values();
  }
}

export function encodeRequest(fingerprint: Uint8Array | undefined): Uint8Array {
  const out = new Uint8Array(REQUEST_BYTES);
  out[0] = SYNC_VERSION;
  if (fingerprint !== undefined) out.set(fingerprint, 1);
  return out;
}

/** The fingerprint a request holds (all zeros: none). */
export function decodeRequest(bytes: Uint8Array): Uint8Array {
  if (bytes.length !== REQUEST_BYTES) throw new SyncProtocolError(`request of ${bytes.length} bytes, want ${REQUEST_BYTES}`);
  if (bytes[0] !== SYNC_VERSION) throw new SyncProtocolError(`request version ${bytes[0]}, want ${SYNC_VERSION}`);
  return bytes.subarray(1);
}

/** The answer to a request: the header, and the digests unless the asker's fingerprint is current. */
export function encodeAnswer(keys: KeyDigests, asked: Uint8Array, inTable: boolean, tableSize: number): Uint8Array[] {
  const fingerprint = keys.fingerprint;
  const keysFollow = asked.every((byte) => byte === 0) || !equalBytes(asked, fingerprint);
  const header = new Uint8Array(HEADER_BYTES);
  const view = new DataView(header.buffer);
  header[0] = SYNC_VERSION;
  header[1] = (inTable ? FLAG_IN_TABLE : 0) | (keysFollow ? FLAG_KEYS : 0);
  view.setUint32(2, tableSize);
  view.setUint32(6, keys.size);
  header.set(fingerprint, 10);
  if (!keysFollow) return [header];
  const body = new Uint8Array(keys.size * DIGEST_BYTES);
  let at = 0;
  for (const digest of keys.digests()) {
    body.set(digest, at);
    at += DIGEST_BYTES;
  }
  return [header, body];
}

export function decodeHeader(bytes: Uint8Array, maxKeys: number): SyncHeader {
  if (bytes.length < HEADER_BYTES) throw new SyncProtocolError(`answer of ${bytes.length} bytes, shorter than its header`);
  if (bytes[0] !== SYNC_VERSION) throw new SyncProtocolError(`answer version ${bytes[0]}, want ${SYNC_VERSION}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const flags = bytes[1]!;
  const count = view.getUint32(6);
  if (count > maxKeys) throw new SyncProtocolError(`answer announces ${count} keys, more than the ${maxKeys} accepted`);
  return {
    inTable: (flags & FLAG_IN_TABLE) !== 0,
    keysFollow: (flags & FLAG_KEYS) !== 0,
    tableSize: view.getUint32(2),
    count,
    fingerprint: bytes.slice(10, HEADER_BYTES),
  };
}

/** The bytes a whole answer with this header has. */
export function answerBytes(header: SyncHeader): number {
  return HEADER_BYTES + (header.keysFollow ? header.count * DIGEST_BYTES : 0);
}

/** The digests after the header; the answer must be exactly as long as its header says. */
export function decodeDigests(bytes: Uint8Array, header: SyncHeader): Uint8Array[] {
  if (bytes.length !== answerBytes(header)) throw new SyncProtocolError(`answer of ${bytes.length} bytes, its header says ${answerBytes(header)}`);
  if (!header.keysFollow) return [];
  const digests: Uint8Array[] = [];
  for (let at = HEADER_BYTES; at < bytes.length; at += DIGEST_BYTES) digests.push(bytes.subarray(at, at + DIGEST_BYTES));
  const fingerprint = new Uint8Array(DIGEST_BYTES);
  for (const digest of digests) xorInto(fingerprint, digest);
  if (!equalBytes(fingerprint, header.fingerprint)) throw new SyncProtocolError('the keys do not match the fingerprint their header gives');
  return digests;
}

function xorInto(target: Uint8Array, digest: Uint8Array): void {
  for (let i = 0; i < DIGEST_BYTES; i++) target[i]! ^= digest[i]!;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
