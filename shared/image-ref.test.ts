import assert from 'node:assert/strict';
import { effectiveTag, ImageRefError, parseImageRef, pinnedRef } from './image-ref.ts';
import { parseDigest } from './digest.ts';

const D = `sha256:${'a'.repeat(64)}`;

describe('parseImageRef', () => {
  const cases: [string, string, string, string | undefined, string | undefined][] = [
    ['nginx', 'docker.io', 'library/nginx', undefined, undefined],
    ['nginx:1.27', 'docker.io', 'library/nginx', '1.27', undefined],
    ['bitnami/redis:7', 'docker.io', 'bitnami/redis', '7', undefined],
    ['docker.io/nginx:1', 'docker.io', 'library/nginx', '1', undefined],
    ['index.docker.io/library/nginx', 'docker.io', 'library/nginx', undefined, undefined],
    ['ghcr.io/org/app:v1.2.3', 'ghcr.io', 'org/app', 'v1.2.3', undefined],
    ['localhost:5000/x:v1', 'localhost:5000', 'x', 'v1', undefined],
    ['localhost/x', 'localhost', 'x', undefined, undefined],
    ['127.0.0.1:5000/a/b/c:latest', '127.0.0.1:5000', 'a/b/c', 'latest', undefined],
    [`nginx:1.27@${D}`, 'docker.io', 'library/nginx', '1.27', D],
    [`registry.k8s.io/pause@${D}`, 'registry.k8s.io', 'pause', undefined, D],
  ];
  for (const [ref, registry, repository, tag, digest] of cases) {
    it(`reads ${ref.length > 50 ? ref.slice(0, 47) + '...' : ref}`, () => {
      const parsed = parseImageRef(ref);
      assert.deepEqual([parsed.registry, parsed.repository, parsed.tag, parsed.digest?.text], [registry, repository, tag, digest]);
      assert.equal(parsed.original, ref);
    });
  }
  for (const bad of ['', 'Nginx', 'nginx:', 'nginx:-x', 'nginx@sha256:12', 'a b', 'nginx:1.27@md5:abc', '/nginx', 'x//y', `${'a'.repeat(300)}`]) {
    it(`refuses ${JSON.stringify(bad.slice(0, 30))}`, () => assert.throws(() => parseImageRef(bad), ImageRefError));
  }
  it('pins by appending the digest, keeping the tag', () => {
    const digest = parseDigest(D);
    assert.equal(pinnedRef(parseImageRef('nginx:1.27'), digest), `nginx:1.27@${D}`);
    assert.equal(pinnedRef(parseImageRef('localhost:5000/x'), digest), `localhost:5000/x@${D}`);
    assert.equal(effectiveTag(parseImageRef('nginx')), 'latest');
  });
});
