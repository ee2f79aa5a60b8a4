/**
 * What a node advertises: for each image record of a mirrored registry, its
 * tag, and the content it reaches that the node holds and can serve: the
 * target manifest or index, the manifests an index lists, and each manifest's
 * config and layers. Never what cannot be served: a tag only when its target
 * is servable, a manifest only when its bytes match its digest, nothing below
 * a manifest that does not. containerd stays behind the functions passed in.
 */
import { parseDigest, type Digest } from '../../shared/digest.ts';
import { MANIFEST_MEDIA_TYPES } from '../../shared/media-types.ts';
import { contentKey, tagKey } from '../../shared/p2p/keys.ts';
import { isValidName, isValidTag } from '../../shared/reference.ts';
import type { ImageRecord } from '../store/containerd/client.ts';
import type { Descriptor } from '../store/store.ts';

/** An image record's name, parsed. */
export interface ImageName {
  /** `docker.io`, `127.0.0.1:5000`. */
  readonly registry: string;
  /** Repository as containerd records it: `library/nginx`, `test/x`. */
  readonly name: string;
  /** undefined for a `name@digest` record: only a plain `name:tag` record resolves a tag. */
  readonly tag: string | undefined;
}

// host[:port] or [ipv6][:port], as in a registry request's ?ns=.
const REGISTRY_RE = /^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$/;

/**
 * containerd names always start with the registry host (`docker.io/library/nginx:1.27`,
 * `127.0.0.1:5000/test/x@sha256:…`). undefined for names that place no image in a
 * registry, such as the `sha256:<config>` records the CRI plugin adds.
 */
export function parseImageName(text: string): ImageName | undefined {
  const slash = text.indexOf('/');
  if (slash <= 0) return undefined;
  const registry = text.slice(0, slash);
  const rest = text.slice(slash + 1);
  const at = rest.indexOf('@');
  const named = at < 0 ? rest : rest.slice(0, at);
  // After the host, a ':' can only start the tag.
  const colon = named.lastIndexOf(':');
  const name = colon < 0 ? named : named.slice(0, colon);
  const tag = colon < 0 ? undefined : named.slice(colon + 1);
  if (!REGISTRY_RE.test(registry) || !isValidName(name) || (tag !== undefined && !isValidTag(tag))) return undefined;
  if (at >= 0) {
    try {
      parseDigest(rest.slice(at + 1));
    } catch {
      return undefined;
    }
  }
  return { registry, name, tag: at < 0 ? tag : undefined };
}

export interface KeySources {
  /** Hosts of the mirrored registries; empty: every registry, and records that name none (`sha256:…`) too. */
  readonly mirrored: ReadonlySet<string>;
  /** Whether the node holds this content now. */
  isPresent(digest: Digest): boolean | Promise<boolean>;
  /** What a manifest or index refers to; undefined when it cannot be served (see ManifestReader). */
  children(descriptor: Descriptor): Promise<readonly Descriptor[] | undefined>;
}

export interface ImageKeys {
  readonly keys: Set<string>;
  /** Image records walked (of mirrored registries, with a servable target or not). */
  readonly images: number;
  /** Tag keys among the keys. */
  readonly tags: number;
  /** Manifests the node holds but cannot serve (corrupt, not a manifest): neither they nor what they list are advertised. */
  readonly unservable: Digest[];
}

/** The keys for these image records. Errors from the sources (containerd unreachable) are thrown, never taken for absence. */
export async function collectKeys(images: readonly ImageRecord[], sources: KeySources): Promise<ImageKeys> {
  const keys = new Set<string>();
  const unservable: Digest[] = [];
  /** Digest → servable, for content several records or platforms share. */
  const walked = new Map<string, boolean>();
  let walkedImages = 0;
  let tags = 0;

  const walk = async (descriptor: Descriptor): Promise<boolean> => {
    const known = walked.get(descriptor.digest.text);
    if (known !== undefined) return known;
    let servable = false;
    if (await sources.isPresent(descriptor.digest)) {
      if (MANIFEST_MEDIA_TYPES.includes(descriptor.mediaType)) {
        const children = await sources.children(descriptor);
        if (children === undefined) {
          unservable.push(descriptor.digest);
        } else {
          servable = true;
          keys.add(contentKey(descriptor.digest));
          // A child absent here (another platform's manifest, a layer not yet pulled) is just left out.
          for (const child of children) await walk(child);
        }
      } else {
        servable = true;
        keys.add(contentKey(descriptor.digest));
      }
    }
    walked.set(descriptor.digest.text, servable);
    return servable;
  };

  for (const image of images) {
    const name = parseImageName(image.name);
    const mirrored = sources.mirrored.size === 0 || (name !== undefined && sources.mirrored.has(name.registry));
    if (!mirrored) continue;
    const target = targetOf(image);
    // A target that is not a manifest (a schema 1 image) cannot be served by the registry handler.
    if (target === undefined || !MANIFEST_MEDIA_TYPES.includes(target.mediaType)) continue;
    walkedImages++;
    if ((await walk(target)) && name?.tag !== undefined) {
      // Record names are unique: no tag is counted twice.
      keys.add(tagKey(name.registry, name.name, name.tag));
      tags++;
    }
  }
  return { keys, images: walkedImages, tags, unservable };
}

function targetOf(image: ImageRecord): Descriptor | undefined {
  try {
    return { mediaType: image.target.mediaType, digest: parseDigest(image.target.digest), size: image.target.size };
  } catch {
    return undefined;
  }
}
