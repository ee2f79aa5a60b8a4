/**
 * The node's libp2p identity: an Ed25519 key kept in the data dir, so a
 * restarted mirror keeps its peer id (and the records that name it stay true).
 * The file holds the protobuf-marshalled private key, mode 0600.
 */
import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import type { Logger } from '../log.ts';

export const PEER_KEY_FILE = 'peer-key';

export class PeerKeyError extends Error {
  override name = 'PeerKeyError';
}

/** Reads `<dataDir>/peer-key`, or creates it (and dataDir) on first start. */
export async function loadOrCreatePeerKey(dataDir: string, logger: Logger): Promise<PrivateKey> {
  const path = join(dataDir, PEER_KEY_FILE);
  const existing = await readKeyFile(path, logger);
  if (existing !== undefined) return existing;

  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const key = await generateKeyPair('Ed25519');
  // Write aside, then link into place: a crash never leaves a half-written key,
  // and link (unlike rename) never replaces a key another process just wrote.
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600, flush: true });
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const raced = await readKeyFile(path, logger);
    if (raced === undefined) throw err;
    return raced;
  } finally {
    await unlink(tmp).catch(() => {});
  }
  logger.info('created peer identity key', { path });
  return key;
}

async function readKeyFile(path: string, logger: Logger): Promise<PrivateKey | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new PeerKeyError(`cannot read peer key ${path}: ${(err as Error).message}`);
  }
  let key: PrivateKey;
  try {
    key = privateKeyFromProtobuf(bytes);
  } catch (err) {
    throw new PeerKeyError(
      `peer key ${path} is not a protobuf-marshalled libp2p private key (${(err as Error).message}); ` +
        'restore it from a backup, or delete it to start with a new peer id',
    );
  }
  const { mode } = await stat(path);
  if ((mode & 0o077) !== 0) {
    logger.warn('peer key is readable by others; restricting it to mode 0600', { path, mode: (mode & 0o777).toString(8) });
    await chmod(path, 0o600).catch((err: unknown) => logger.warn('could not restrict peer key mode', { path, err }));
  }
  return key;
}
