/**
 * A node holding thousands of digests, cheaply: one image whose manifest lists
 * that many tiny layers, written as an OCI layout, tarred, and imported into
 * containerd with `ctr images import --no-unpack` (a pull would fetch each layer
 * over HTTP, and an unpack of thousands of layers fails on overlay's depth
 * limit). The image record names a mirrored registry, so the node's advertiser
 * walks the manifest and advertises every layer, exactly as for a pulled image.
 */
import { join } from 'node:path';
import type { Containerd } from '../harness/containerd.ts';
import { buildImage, type ImageLayout } from '../harness/images.ts';
import { run } from '../harness/procs.ts';

export interface ManyLayersInit {
  /** Directory for the layout and the archive; created if missing. */
  dir: string;
  layers: number;
  /** Bytes of the file inside each layer (random: each layer has its own digest). */
  layerBytes: number;
  tag: string;
}

export interface ManyLayersArchive {
  readonly layout: ImageLayout;
  /** The layout as a tar archive, for `ctr images import`. */
  readonly archive: string;
}

export interface ManyLayersImage {
  readonly layout: ImageLayout;
  /** `<registry host>/<repo>:<tag>`: the image record. */
  readonly ref: string;
  readonly repo: string;
  /** Layer digests, in manifest order. */
  readonly layerDigests: string[];
  /** Size of each layer blob, by digest. */
  readonly sizes: ReadonlyMap<string, number>;
  /** Keys the holder advertises for it: tag, manifest, config, layers. */
  readonly keys: number;
}

const IMPORT_TIMEOUT_MS = 300_000;

/** Writes the layout and its tar archive. */
export async function buildManyLayers(init: ManyLayersInit): Promise<ManyLayersArchive> {
  const layout = await buildImage({ dir: join(init.dir, 'layout'), tag: init.tag, layers: Array.from({ length: init.layers }, () => init.layerBytes) });
  const archive = join(init.dir, 'image.tar');
  await run('tar', ['-cf', archive, '-C', layout.dir, '.']);
  return { layout, archive };
}

/** Imports the archive without unpacking as `<registry>/<repo>:<tag>`; checks the image record's target. */
export async function importManyLayers(containerd: Containerd, built: ManyLayersArchive, registry: string, repo: string): Promise<ManyLayersImage> {
  const { layout } = built;
  const ref = `${registry}/${repo}:${layout.tag}`;
  await run('ctr', ['--address', containerd.sock, '-n', containerd.namespace, 'images', 'import', '--no-unpack', '--base-name', `${registry}/${repo}`, built.archive], {
    timeoutMs: IMPORT_TIMEOUT_MS,
  });
  const listed = (await containerd.ctr(['images', 'ls'])).split('\n').find((l) => l.startsWith(`${ref} `));
  if (listed === undefined || !listed.split(/\s+/).includes(layout.digest)) {
    throw new Error(`ctr images import did not record ${ref} -> ${layout.digest}: ${listed ?? 'no such image'}`);
  }
  const manifest = layout.manifests[0]!;
  return {
    layout,
    ref,
    repo,
    layerDigests: manifest.layers.map((l) => l.digest),
    sizes: new Map(manifest.layers.map((l) => [l.digest, l.size])),
    keys: manifest.layers.length + 3,
  };
}
