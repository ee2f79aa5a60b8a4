/** What a pull of a pushed image brings to a node, and a check that the node holds exactly that. */
import assert from 'node:assert/strict';
import type { ClusterNode } from './cluster.ts';
import { hostPlatform, type Blob, type PushedImage } from './images.ts';

/** The blobs a default (host-platform) pull fetches: the index if any, the manifest, its config and layers. */
export function pulledBlobs(image: PushedImage): Blob[] {
  const host = hostPlatform();
  const manifest = image.manifests.find((m) => m.platform.architecture === host.architecture) ?? image.manifests[0]!;
  const top = image.manifests.length > 1 ? [{ digest: image.digest, size: image.size, mediaType: image.mediaType }] : [];
  return [...top, manifest, manifest.config, ...manifest.layers];
}

/** Every pulled blob is in the node's containerd, byte for byte as pushed (compared with equals: a diff of a 128 MiB blob helps nobody). */
export async function assertHolds(node: ClusterNode, image: PushedImage): Promise<void> {
  for (const blob of pulledBlobs(image)) {
    assert.ok((await node.containerd.ctrBytes(['content', 'get', blob.digest])).equals(image.bytes(blob.digest)), `${node.name} ${blob.digest}`);
  }
}
