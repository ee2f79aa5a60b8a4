/**
 * DHT keys as CIDs: CIDv1, raw codec, sha256 multihash of the key string's
 * UTF-8 bytes. Every node must hash alike, so this mapping is part of the
 * network protocol: changing it splits old and new nodes apart.
 */
import { createHash } from 'node:crypto';
import { CID } from 'multiformats/cid';
import * as Digest from 'multiformats/hashes/digest';

/** multicodec `raw`. */
export const RAW_CODEC = 0x55;
/** multihash `sha2-256`. */
export const SHA256_CODE = 0x12;

export function keyToCid(key: string): CID {
  return digestToCid(keyDigest(key));
}

/** The SHA-256 of a key string: its CID's multihash digest. */
export function keyDigest(key: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(key, 'utf8').digest());
}

/** The CID of a key whose digest is known (sent by a peer, record-sync.ts). */
export function digestToCid(digest: Uint8Array): CID {
  return CID.createV1(RAW_CODEC, Digest.create(SHA256_CODE, digest));
}
