/**
 * The private network's pre-shared key, in the swarm key format that
 * @libp2p/pnet (and go-libp2p, IPFS) read:
 *
 *     /key/swarm/psk/1.0.0/
 *     /base16/
 *     <64 hex digits: 32 random bytes>
 *
 * A node without the same key cannot complete a connection to a member: every
 * byte on the wire is XSalsa20-encrypted with it before noise even starts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';

const HEADER = '/key/swarm/psk/1.0.0/';
const CODEC = '/base16/';

export interface NetworkKey {
  /** The 32 secret bytes. */
  readonly secret: Uint8Array;
  /** A short, non-secret name for logs: the first 8 hex digits of sha256(secret). */
  readonly id: string;
}

export class NetworkKeyError extends Error {
  override name = 'NetworkKeyError';
}

/** A new random key, as the text of a key file. */
export function generateNetworkKey(): string {
  return formatNetworkKey(randomBytes(32));
}

export function formatNetworkKey(secret: Uint8Array): string {
  return `${HEADER}\n${CODEC}\n${Buffer.from(secret).toString('hex')}\n`;
}

export function parseNetworkKey(text: string): NetworkKey {
  const lines = text.split(/\r?\n/).map((line) => line.trim());
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const [header, codec, hex, ...rest] = lines;
  if (header !== HEADER) throw new NetworkKeyError(`the first line must be "${HEADER}"`);
  if (codec !== CODEC) throw new NetworkKeyError(`the second line must be "${CODEC}" (the only encoding supported)`);
  if (hex === undefined || !/^[0-9a-fA-F]{64}$/.test(hex)) throw new NetworkKeyError('the third line must be 64 hex digits (32 bytes)');
  if (rest.length > 0) throw new NetworkKeyError('unexpected lines after the key');
  const secret = new Uint8Array(Buffer.from(hex, 'hex'));
  return { secret, id: createHash('sha256').update(secret).digest('hex').slice(0, 8) };
}

export async function readNetworkKeyFile(path: string): Promise<NetworkKey> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new NetworkKeyError(`cannot read network key file ${path}: ${(err as Error).message}`);
  }
  try {
    return parseNetworkKey(text);
  } catch (err) {
    throw new NetworkKeyError(`network key file ${path} is not a swarm key: ${(err as Error).message}`);
  }
}

/** The bytes @libp2p/pnet's preSharedKey({ psk }) wants: the canonical file (lowercase hex, which it requires). */
export function pnetKeyBytes(key: NetworkKey): Uint8Array {
  return new TextEncoder().encode(formatNetworkKey(key.secret));
}
