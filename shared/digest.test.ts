import assert from 'node:assert/strict';
import { DigestError, digestOf, parseDigest } from './digest.ts';

describe('parseDigest', () => {
  const hex = 'a'.repeat(64);
  it('accepts sha256 and sha512', () => {
    assert.deepEqual(parseDigest(`sha256:${hex}`), { algorithm: 'sha256', hex, text: `sha256:${hex}` });
    assert.equal(parseDigest(`sha512:${'b'.repeat(128)}`).algorithm, 'sha512');
  });
  for (const bad of ['', 'sha256', `sha256:${'A'.repeat(64)}`, `sha256:${hex}0`, `sha256:${'a'.repeat(63)}`, `sha256:../${hex}`, `sha256:${hex}/x`, ':abc', `SHA256:${hex}`]) {
    it(`rejects ${JSON.stringify(bad.slice(0, 20))}… as invalid`, () => {
      assert.throws(() => parseDigest(bad), (err: unknown) => err instanceof DigestError && !err.unsupported);
    });
  }
  it('tells an unsupported algorithm from a malformed digest', () => {
    assert.throws(() => parseDigest('md5:d41d8cd98f00b204e9800998ecf8427e'), (err: unknown) => err instanceof DigestError && err.unsupported);
  });
  it('digestOf hashes', () => {
    assert.equal(digestOf(Buffer.from('')).text, 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });
});
