import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { keyToCid } from './cid.ts';

describe('keyToCid', () => {
  for (const key of ['sha256:' + 'ab'.repeat(32), 'docker.io/library/nginx:1.27']) {
    it(`is CIDv1, raw, sha256 of the UTF-8 string: ${key}`, () => {
      const cid = keyToCid(key);
      const sha = createHash('sha256').update(Buffer.from(key, 'utf8')).digest();
      assert.equal(cid.version, 1);
      assert.equal(cid.code, 0x55);
      assert.equal(cid.multihash.code, 0x12);
      assert.deepEqual(Buffer.from(cid.multihash.digest), sha);
      // The binary form, written out by hand: version 1, raw, sha2-256, 32 bytes, digest.
      assert.deepEqual(Buffer.from(cid.bytes), Buffer.concat([Buffer.from([0x01, 0x55, 0x12, 0x20]), sha]));
    });
  }

  it('matches the well-known CID of the raw bytes "hello"', () => {
    assert.equal(keyToCid('hello').toString(), 'bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq');
  });

  it('hashes non-ASCII keys as UTF-8', () => {
    const sha = createHash('sha256').update(Buffer.from('registry.example/ñ:1', 'utf8')).digest();
    assert.deepEqual(Buffer.from(keyToCid('registry.example/ñ:1').multihash.digest), sha);
  });
});
