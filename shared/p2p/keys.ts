/**
 * What is advertised in the DHT: a content digest (`sha256:<hex>`), or an image
 * tag (`<registry>/<name>:<tag>`, the name as containerd records it), each
 * hashed into a CID key (CIDv1, raw codec, sha256 multihash of the key string).
 */
import type { Digest } from '../digest.ts';

export function contentKey(digest: Digest): string {
  return digest.text;
}

export function tagKey(registry: string, name: string, tag: string): string {
  return `${registry}/${name}:${tag}`;
}
