/**
 * The wire format of `/shoal/records/1.0.0` (record-sync.ts), and the set of
 * keys a node sends on it. One message each way per stream; a key is its
 * 32-byte SHA-256 (the multihash digest of its CID, cid.ts); numbers are u32
 * big-endian.
 *
 * Pull, 34 bytes: version 1, kind 1, then the fingerprint of the asker's last
 * full copy of the answerer's keys (32 zero bytes: send them all).
 * Its answer: a 42-byte header (version 1; flags: 1 "you are in my routing
 * table", 2 "keys follow"; the answerer's routing table size and key count;
 * the fingerprint of its keys), then, when flag 2 is set, every key. Keys
 * follow unless the asker sent the answerer's fingerprint.
 *
 * Push: version 1, kind 2, a count, then that many keys the sender has just
 * begun to advertise. Its answer: one byte, version 1, once they are stored.
 *
 * The fingerprint is the XOR of the keys' digests: kept up to date per key,
 * the same whatever the order.
 */
import { keyDigest } from './cid.ts';

export const SYNC_VERSION = 1;
export const DIGEST_BYTES = 32;
/** Enough of any message a node receives unasked to know its kind and length. */
export const MESSAGE_HEAD_BYTES = 1 + 1 + 4;
export const PULL_BYTES = 1 + 1 + DIGEST_BYTES;
export const HEADER_BYTES = 1 + 1 + 4 + 4 + DIGEST_BYTES;
export const PUSH_ACK = new Uint8Array([SYNC_VERSION]);

const KIND_PULL = 1;
const KIND_PUSH = 2;

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

  /** The digest of a key in the set. */
  digestOf(key: string): Uint8Array | undefined {
    return this.#digests.get(key);
  }

  digests(): IterableIterator<Uint8Array> {
    return this.#digests.values();
  }
}

/** A message a node receives unasked. */
export type Message = { kind: 'pull'; fingerprint: Uint8Array } | { kind: 'push'; digests: Uint8Array[] };

export function encodePull(fingerprint: Uint8Array | undefined): Uint8Array {
  const out = new Uint8Array(PULL_BYTES);
  out[0] = SYNC_VERSION;
  out[1] = KIND_PULL;
  if (fingerprint !== undefined) out.set(fingerprint, 2);
  return out;
}

export function encodePush(digests: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(MESSAGE_HEAD_BYTES + digests.length * DIGEST_BYTES);
  out[0] = SYNC_VERSION;
  out[1] = KIND_PUSH;
  new DataView(out.buffer).setUint32(2, digests.length);
  digests.forEach((digest, i) => out.set(digest, MESSAGE_HEAD_BYTES + i * DIGEST_BYTES));
  return out;
}

/** The bytes a whole message has, from its first MESSAGE_HEAD_BYTES. */
export function messageBytes(head: Uint8Array, maxKeys: number): number {
  if (head[0] !== SYNC_VERSION) throw new SyncProtocolError(`message version ${head[0]}, want ${SYNC_VERSION}`);
  if (head[1] === KIND_PULL) return PULL_BYTES;
  if (head[1] !== KIND_PUSH) throw new SyncProtocolError(`message kind ${head[1]} is unknown`);
  const count = new DataView(head.buffer, head.byteOffset, MESSAGE_HEAD_BYTES).getUint32(2);
  if (count > maxKeys) throw new SyncProtocolError(`a push of ${count} keys, more than the ${maxKeys} accepted`);
  return MESSAGE_HEAD_BYTES + count * DIGEST_BYTES;
}

export function decodeMessage(bytes: Uint8Array, maxKeys: number): Message {
  if (bytes.length < MESSAGE_HEAD_BYTES) throw new SyncProtocolError(`message of ${bytes.length} bytes, shorter than its head`);
  const want = messageBytes(bytes, maxKeys);
  if (bytes.length !== want) throw new SyncProtocolError(`message of ${bytes.length} bytes, its head says ${want}`);
  if (bytes[1] === KIND_PULL) return { kind: 'pull', fingerprint: bytes.subarray(2) };
  const digests: Uint8Array[] = [];
  for (let at = MESSAGE_HEAD_BYTES; at < bytes.length; at += DIGEST_BYTES) digests.push(bytes.subarray(at, at + DIGEST_BYTES));
  return { kind: 'push', digests };
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
