import assert from 'node:assert/strict';
import { parseMirroredRegistries, parseMirroredRegistry } from './registries.ts';

describe('parseMirroredRegistry', () => {
  it('maps docker.io to its API host over https', () => {
    const r = parseMirroredRegistry('docker.io');
    assert.equal(r.host, 'docker.io');
    assert.equal(r.upstream.href, 'https://registry-1.docker.io/');
  });
  it('keeps host:port over https, and http:// URLs as plain http', () => {
    assert.equal(parseMirroredRegistry('ghcr.io').upstream.href, 'https://ghcr.io/');
    assert.equal(parseMirroredRegistry('registry.local:5000').upstream.href, 'https://registry.local:5000/');
    const plain = parseMirroredRegistry('http://127.0.0.1:5000');
    assert.equal(plain.host, '127.0.0.1:5000');
    assert.equal(plain.upstream.href, 'http://127.0.0.1:5000/');
  });
  for (const bad of ['ftp://x', 'http://x/path', 'http://u:p@x', 'a b', 'x:99999', '-bad.io', 'x/y']) {
    it(`rejects ${JSON.stringify(bad)}`, () => assert.throws(() => parseMirroredRegistry(bad)));
  }
  it('parses comma lists, ignores blanks, refuses duplicates', () => {
    assert.deepEqual(parseMirroredRegistries(' docker.io, ,ghcr.io ').map((r) => r.host), ['docker.io', 'ghcr.io']);
    assert.deepEqual(parseMirroredRegistries(''), []);
    assert.throws(() => parseMirroredRegistries('docker.io,docker.io'), /listed twice/);
  });
});
