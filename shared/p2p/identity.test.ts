import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile, chmod, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { silentLogger } from '../log.ts';
import { loadOrCreatePeerKey, PeerKeyError } from './identity.ts';

describe('loadOrCreatePeerKey', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-identity-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates an Ed25519 key (and the data dir) on first start, mode 0600, protobuf-marshalled', async () => {
    const dataDir = join(dir, 'nested', 'data');
    const key = await loadOrCreatePeerKey(dataDir, silentLogger);
    assert.equal(key.type, 'Ed25519');
    const path = join(dataDir, 'peer-key');
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const onDisk = privateKeyFromProtobuf(await readFile(path));
    assert.ok(onDisk.equals(key));
    assert.deepEqual(await readdir(dataDir), ['peer-key'], 'no temporary file left behind');
  });

  it('loads the same key, so the peer id survives a restart', async () => {
    const first = await loadOrCreatePeerKey(dir, silentLogger);
    const second = await loadOrCreatePeerKey(dir, silentLogger);
    assert.equal(peerIdFromPrivateKey(second).toString(), peerIdFromPrivateKey(first).toString());
  });

  it('agrees on one key when two starts race', async () => {
    const keys = await Promise.all(Array.from({ length: 5 }, () => loadOrCreatePeerKey(dir, silentLogger)));
    for (const key of keys) assert.ok(key.equals(keys[0]!));
  });

  it('refuses a corrupt key file with an error naming it, and leaves it alone', async () => {
    const path = join(dir, 'peer-key');
    await writeFile(path, 'not a key', { mode: 0o600 });
    await assert.rejects(loadOrCreatePeerKey(dir, silentLogger), (err: Error) => {
      assert.ok(err instanceof PeerKeyError);
      assert.match(err.message, new RegExp(`peer key ${path} is not a protobuf-marshalled libp2p private key`));
      assert.match(err.message, /delete it to start with a new peer id/);
      return true;
    });
    assert.equal(await readFile(path, 'utf8'), 'not a key');
  });

  it('refuses an empty key file', async () => {
    await writeFile(join(dir, 'peer-key'), '');
    await assert.rejects(loadOrCreatePeerKey(dir, silentLogger), PeerKeyError);
  });

  it('restricts a key file that others could read to 0600', async () => {
    await loadOrCreatePeerKey(dir, silentLogger);
    const path = join(dir, 'peer-key');
    await chmod(path, 0o644);
    await loadOrCreatePeerKey(dir, silentLogger);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
  });
});
