/**
 * The wire format of `/shoal/records/1.0.0` (record-sync.ts), and the set of
 * keys a node sends on it. One message each way per stream. A key is its
 * 32-byte SHA-256 (the multihash digest of its CID, cid.ts); a peer in a
 * routing table is the 32-byte SHA-256 of its peer id string; numbers are
 * big-endian.
 *
 * Pull, 34 bytes: version 1, kind 1, then the fingerprint of the asker's last
 * full copy of the answerer's keys (32 zero bytes: send them all).
 * Its answer: version 1, flags (2: keys follow), the answerer's table count
 * (u16; TABLE_TOO_LARGE when it holds K peers or more), its key count (u32),
 * its table's version (f64), the fingerprint of its keys, the table's peers,
 * then, when flag 2 is set, every key. Keys follow unless the asker sent the
 * answerer's fingerprint.
 *
 * Push: version 1, kind 2, the sender's table count (u16), a key count
 * (u32), the table's version (f64), the fingerprint of all the sender's keys
 * now, the table's peers, then keys the sender has just begun to advertise
 * (none: only its table changed). Its answer: one byte, version 1, once they
 * are stored. A receiver whose copy plus these keys makes that fingerprint
 * keeps its copy current, so its next pull is a header.
 *
 * A table's version grows with every change, from the time its node started,
 * so that an answer or push overtaken by a later one is known to be older.
 *
 * The fingerprint is the XOR of the keys' digests: kept up to date per key,
 * the same whatever the order.
 */
import { keyDigest } from './cid.ts';

export const SYNC_VERSION = 1;
export const DIGEST_BYTES = 32;
/** Enough of any message a node receives unasked to know its kind and length. */
export const MESSAGE_HEAD_BYTES = 1 + 1 + 2 + 4;
/** A push's fixed part: the head, the table's version and the fingerprint. */
const PUSH_HEAD_BYTES = MESSAGE_HEAD_BYTES + 8 + DIGEST_BYTES;
export const PULL_BYTES = 1 + 1 + DIGEST_BYTES;
export const ANSWER_HEAD_BYTES = 1 + 1 + 2 + 4 + 8 + DIGEST_BYTES;
export const PUSH_ACK = new Uint8Array([SYNC_VERSION]);
/** A table count that says "K peers or more": such a table is not listed. */
export const TABLE_TOO_LARGE = 0xffff;
/** Most keys in one push; more is a protocol error. */
export const MAX_PUSH_KEYS = 16_384;
/** Most peers a listed table may have (real ones have fewer than K, 20); more is a protocol error. */
export const MAX_TABLE_PEERS = 1024;

const KIND_PULL = 1;
const KIND_PUSH = 2;
const FLAG_KEYS = 2;

export class SyncProtocolError extends Error {
  override name = 'SyncProtocolError';
}

/** A sender's routing table: its peers' hashes (undefined when it holds K peers or more), and its version. */
export interface TableView {
  readonly peers: readonly string[] | undefined;
  readonly version: number;
}

/** What a pull's answer says. */
export interface Answer {
  readonly table: TableView;
  readonly count: number;
  readonly fingerprint: Uint8Array;
  /** The keys, when they follow (the asker's copy was not current). */
  readonly digests: Uint8Array[] | undefined;
}

/** A message a node receives unasked. */
export type Message = { kind: 'pull'; fingerprint: Uint8Array } | { kind: 'push'; table: TableView; fingerprint: Uint8Array; digests: Uint8Array[] };

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

  /** Adds a key; false when it was in the set already. */
  add(key: string): boolean {
    if (this.#digests.has(key)) return false;
    const digest = keyDigest(key);
    this.#digests.set(key, digest);
    xorInto(this.#fingerprint, digest);
    return true;
  }

  /** Removes a key; false when it was not in the set. */
  delete(key: string): boolean {
    const digest = this.#digests.get(key);
    if (digest === undefined) return false;
    this.#digests.delete(key);
    xorInto(this.#fingerprint, digest);
    return true;
  }

  has(key: string): boolean {
    return this.#digests.has(key);
  }

  /** The keys, in the order they were added. */
  keys(): IterableIterator<string> {
    return this.#digests.keys();
  }

  /** The digest of a key in the set; undefined once withdrawn. */
  digestOf(key: string): Uint8Array | undefined {
    return this.#digests.get(key);
  }

  digests(): IterableIterator<Uint8Array> {
    return this.#digests.values();
  }
}

/** How a peer id appears in a table list. */
export function peerHash(peerId: string): string {
  return Buffer.from(keyDigest(peerId)).toString('hex');
}

export function encodePull(fingerprint: Uint8Array | undefined): Uint8Array {
  const out = new Uint8Array(PULL_BYTES);
  out[0] = SYNC_VERSION;
  out[1] = KIND_PULL;
  if (fingerprint !== undefined) out.set(fingerprint, 2);
  return out;
}

export function encodePush(table: TableView, fingerprint: Uint8Array, digests: readonly Uint8Array[]): Uint8Array {
  const tableCount = table.peers?.length ?? 0;
  const out = new Uint8Array(PUSH_HEAD_BYTES + (tableCount + digests.length) * DIGEST_BYTES);
  const view = new DataView(out.buffer);
  out[0] = SYNC_VERSION;
  out[1] = KIND_PUSH;
  view.setUint16(2, table.peers === undefined ? TABLE_TOO_LARGE : tableCount);
  view.setUint32(4, digests.length);
  view.setFloat64(8, table.version);
  out.set(fingerprint, 16);
  let at = writeTable(out, PUSH_HEAD_BYTES, table.peers);
  for (const digest of digests) {
    out.set(digest, at);
    at += DIGEST_BYTES;
  }
  return out;
}

/** The bytes a whole message has, from its first MESSAGE_HEAD_BYTES. */
export function messageBytes(head: Uint8Array): number {
  if (head[0] !== SYNC_VERSION) throw new SyncProtocolError(`message version ${head[0]}, want ${SYNC_VERSION}`);
  if (head[1] === KIND_PULL) return PULL_BYTES;
  if (head[1] !== KIND_PUSH) throw new SyncProtocolError(`message kind ${head[1]} is unknown`);
  const view = new DataView(head.buffer, head.byteOffset, MESSAGE_HEAD_BYTES);
  const count = view.getUint32(4);
  if (count > MAX_PUSH_KEYS) throw new SyncProtocolError(`a push of ${count} keys, more than the ${MAX_PUSH_KEYS} accepted`);
  return PUSH_HEAD_BYTES + (tableEntries(view.getUint16(2)) + count) * DIGEST_BYTES;
}

export function decodeMessage(bytes: Uint8Array): Message {
  if (bytes.length < MESSAGE_HEAD_BYTES) throw new SyncProtocolError(`message of ${bytes.length} bytes, shorter than its head`);
  const want = messageBytes(bytes);
  if (bytes.length !== want) throw new SyncProtocolError(`message of ${bytes.length} bytes, its head says ${want}`);
  if (bytes[1] === KIND_PULL) return { kind: 'pull', fingerprint: bytes.subarray(2) };
  const view = new DataView(bytes.buffer, bytes.byteOffset, PUSH_HEAD_BYTES);
  const [peers, at] = readTable(bytes, PUSH_HEAD_BYTES, view.getUint16(2));
  return { kind: 'push', table: { peers, version: view.getFloat64(8) }, fingerprint: bytes.slice(16, PUSH_HEAD_BYTES), digests: slices(bytes, at) };
}

/** The answer to a pull: the keys follow unless the asker's fingerprint is current (all zeros: never). */
export function encodeAnswer(keys: KeyDigests, asked: Uint8Array, table: TableView): Uint8Array[] {
  const fingerprint = keys.fingerprint;
  const keysFollow = asked.every((byte) => byte === 0) || !equalBytes(asked, fingerprint);
  const head = new Uint8Array(ANSWER_HEAD_BYTES + (table.peers?.length ?? 0) * DIGEST_BYTES);
  const view = new DataView(head.buffer);
  head[0] = SYNC_VERSION;
  head[1] = keysFollow ? FLAG_KEYS : 0;
  view.setUint16(2, table.peers === undefined ? TABLE_TOO_LARGE : table.peers.length);
  view.setUint32(4, keys.size);
  view.setFloat64(8, table.version);
  head.set(fingerprint, 16);
  writeTable(head, ANSWER_HEAD_BYTES, table.peers);
  if (!keysFollow) return [head];
  const body = new Uint8Array(keys.size * DIGEST_BYTES);
  let at = 0;
  for (const digest of keys.digests()) {
    body.set(digest, at);
    at += DIGEST_BYTES;
  }
  return [head, body];
}

/** The bytes a whole answer has, from its first ANSWER_HEAD_BYTES. */
export function answerBytes(head: Uint8Array, maxKeys: number): number {
  if (head[0] !== SYNC_VERSION) throw new SyncProtocolError(`answer version ${head[0]}, want ${SYNC_VERSION}`);
  const view = new DataView(head.buffer, head.byteOffset, ANSWER_HEAD_BYTES);
  const count = view.getUint32(4);
  if (count > maxKeys) throw new SyncProtocolError(`answer announces ${count} keys, more than the ${maxKeys} accepted`);
  return ANSWER_HEAD_BYTES + (tableEntries(view.getUint16(2)) + ((head[1]! & FLAG_KEYS) !== 0 ? count : 0)) * DIGEST_BYTES;
}

/** A whole answer, checked: exactly as long as its head says, its keys matching its fingerprint. */
export function decodeAnswer(bytes: Uint8Array, maxKeys: number): Answer {
  if (bytes.length < ANSWER_HEAD_BYTES) throw new SyncProtocolError(`answer of ${bytes.length} bytes, shorter than its head`);
  const want = answerBytes(bytes, maxKeys);
  if (bytes.length !== want) throw new SyncProtocolError(`answer of ${bytes.length} bytes, its head says ${want}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, ANSWER_HEAD_BYTES);
  const count = view.getUint32(4);
  const fingerprint = bytes.slice(16, ANSWER_HEAD_BYTES);
  const [peers, at] = readTable(bytes, ANSWER_HEAD_BYTES, view.getUint16(2));
  const table = { peers, version: view.getFloat64(8) };
  if ((bytes[1]! & FLAG_KEYS) === 0) return { table, count, fingerprint, digests: undefined };
  const digests = slices(bytes, at);
  const sum = new Uint8Array(DIGEST_BYTES);
  for (const digest of digests) xorInto(sum, digest);
  if (!equalBytes(sum, fingerprint)) throw new SyncProtocolError('the keys do not match the fingerprint their header gives');
  return { table, count, fingerprint, digests };
}

function tableEntries(count: number): number {
  if (count === TABLE_TOO_LARGE) return 0;
  if (count > MAX_TABLE_PEERS) throw new SyncProtocolError(`a table of ${count} peers, more than the ${MAX_TABLE_PEERS} accepted`);
  return count;
}

function writeTable(out: Uint8Array, at: number, table: readonly string[] | undefined): number {
  for (const hash of table ?? []) {
    out.set(Buffer.from(hash, 'hex'), at);
    at += DIGEST_BYTES;
  }
  return at;
}

function readTable(bytes: Uint8Array, at: number, count: number): [readonly string[] | undefined, number] {
  if (count === TABLE_TOO_LARGE) return [undefined, at];
  const table: string[] = [];
  for (let i = 0; i < count; i++, at += DIGEST_BYTES) table.push(Buffer.from(bytes.subarray(at, at + DIGEST_BYTES)).toString('hex'));
  return [table, at];
}

function slices(bytes: Uint8Array, from: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = from; at < bytes.length; at += DIGEST_BYTES) out.push(bytes.subarray(at, at + DIGEST_BYTES));
  return out;
}

/** A copy's fingerprint with these keys added: what the sender's is if the copy was current and they are all that is new. */
export function withKeys(fingerprint: Uint8Array, digests: readonly Uint8Array[]): Uint8Array {
  const sum = fingerprint.slice();
  for (const digest of digests) xorInto(sum, digest);
  return sum;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

function xorInto(target: Uint8Array, digest: Uint8Array): void {
  for (let i = 0; i < DIGEST_BYTES; i++) target[i]! ^= digest[i]!;
}
