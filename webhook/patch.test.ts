import assert from 'node:assert/strict';
import type { PodView } from './admission.ts';
import { jsonPointer, podPatch, type ImagePin } from './patch.ts';

function view(annotations: Record<string, string> | undefined, hasMetadata = true): PodView {
  return { name: 'p', hasMetadata, annotations, serviceAccountName: undefined, imagePullSecrets: [], containers: { initContainers: [], containers: [], ephemeralContainers: [] } };
}

const PIN: ImagePin = { field: 'containers', index: 2, container: 'web', original: 'nginx:1.27', pinned: 'nginx:1.27@sha256:ab', by: 'peer' };

describe('JSON patch', () => {
  it('escapes ~ and / in pointer segments (RFC 6901), ~ first', () => {
    assert.equal(jsonPointer(['metadata', 'annotations', 'shoal.dev/original-images']), '/metadata/annotations/shoal.dev~1original-images');
    assert.equal(jsonPointer(['a~/b', 0]), '/a~0~1b/0');
    assert.equal(jsonPointer(['~1']), '/~01');
  });

  it('nothing to pin: no operations, not even annotations', () => {
    assert.deepEqual(podPatch(view(undefined), [], true), []);
  });

  it('replaces the image at its index and adds the whole annotations map when there is none', () => {
    assert.deepEqual(podPatch(view(undefined), [PIN], true), [
      { op: 'replace', path: '/spec/containers/2/image', value: 'nginx:1.27@sha256:ab' },
      { op: 'add', path: '/metadata/annotations', value: { 'shoal.dev/original-images': '{"web":"nginx:1.27"}', 'shoal.dev/resolved-by': '{"web":"peer"}' } },
    ]);
  });

  it('adds metadata itself when the object has none', () => {
    assert.deepEqual(podPatch(view(undefined, false), [PIN], true)[1], {
      op: 'add',
      path: '/metadata',
      value: { annotations: { 'shoal.dev/original-images': '{"web":"nginx:1.27"}', 'shoal.dev/resolved-by': '{"web":"peer"}' } },
    });
  });

  it('replaces a record that is not ours to read (not a JSON object of strings)', () => {
    const ops = podPatch(view({ 'shoal.dev/original-images': 'garbage', 'shoal.dev/resolved-by': '["x"]' }), [PIN], true);
    assert.deepEqual(ops.slice(1), [
      { op: 'replace', path: '/metadata/annotations/shoal.dev~1original-images', value: '{"web":"nginx:1.27"}' },
      { op: 'replace', path: '/metadata/annotations/shoal.dev~1resolved-by', value: '{"web":"peer"}' },
    ]);
  });

  it('images only when annotations cannot be written', () => {
    assert.deepEqual(podPatch(view(undefined), [PIN], false), [{ op: 'replace', path: '/spec/containers/2/image', value: 'nginx:1.27@sha256:ab' }]);
  });
});
