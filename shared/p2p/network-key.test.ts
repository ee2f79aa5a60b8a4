import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateNetworkKey, NetworkKeyError, parseNetworkKey, pnetKeyBytes, readNetworkKeyFile } from './network-key.ts';

const HEX = '0123456789abcdef'.repeat(4);

describe('network key', () => {
  it('reads the swarm key format', () => {
    const key = parseNetworkKey(`/key/swarm/psk/1.0.0/\n/base16/\n${HEX}\n`);
    assert.equal(Buffer.from(key.secret).toString('hex'), HEX);
    assert.match(key.id, /^[0-9a-f]{8}$/);
  });

  it('accepts CRLF, no final newline and uppercase hex, and hands pnet the canonical form', () => {
    const key = parseNetworkKey(`/key/swarm/psk/1.0.0/\r\n/base16/\r\n${HEX.toUpperCase()}`);
    assert.equal(new TextDecoder().decode(pnetKeyBytes(key)), `/key/swarm/psk/1.0.0/\n/base16/\n${HEX}\n`);
  });

  it('generates keys that parse, each different', () => {
    const a = generateNetworkKey();
    const b = generateNetworkKey();
    assert.match(a, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/);
    assert.notEqual(a, b);
    assert.equal(parseNetworkKey(a).secret.length, 32);
  });

  for (const [what, text, message] of [
    ['a wrong header', `/key/swarm/psk/2.0.0/\n/base16/\n${HEX}\n`, /first line/],
    ['another encoding', `/key/swarm/psk/1.0.0/\n/base64/\n${HEX}\n`, /second line/],
    ['a short key', `/key/swarm/psk/1.0.0/\n/base16/\n${HEX.slice(2)}\n`, /64 hex digits/],
    ['non-hex digits', `/key/swarm/psk/1.0.0/\n/base16/\n${'zz'.repeat(32)}\n`, /64 hex digits/],
    ['extra lines', `/key/swarm/psk/1.0.0/\n/base16/\n${HEX}\nmore\n`, /unexpected lines/],
  ] as const) {
    it(`refuses ${what}`, () => {
      assert.throws(() => parseNetworkKey(text), (err: Error) => err instanceof NetworkKeyError && message.test(err.message));
    });
  }

  it('names the file in its errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-psk-'));
    try {
      const path = join(dir, 'swarm.key');
      await writeFile(path, 'garbage');
      await assert.rejects(readNetworkKeyFile(path), new RegExp(`network key file ${path} is not a swarm key`));
      await assert.rejects(readNetworkKeyFile(join(dir, 'missing')), /cannot read network key file/);
      await writeFile(path, generateNetworkKey());
      assert.equal((await readNetworkKeyFile(path)).secret.length, 32);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
