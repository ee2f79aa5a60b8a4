/**
 * Test images without docker: an OCI image layout written by hand (oci-layout,
 * index.json, blobs/sha256/*) with real gzip tar layers, then pushed to a
 * registry with skopeo, keeping every digest. The returned description lets a
 * test compare what a mirror or containerd serves with the original bytes.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { run } from './procs.ts';
import { tarArchive } from './tar.ts';

export const MEDIA = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

export interface Platform {
  os: string;
  architecture: string;
}

export interface Blob {
  digest: string;
  size: number;
  mediaType: string;
}

export interface LayerSpec {
  /** Size of the file inside the layer, in bytes (the gzipped layer is ~512 B larger). */
  size: number;
  /** Content seed (default: derived from the image seed): equal seed and size, equal layer. */
  seed?: string;
}

export interface ImageSpec {
  /** Directory for the OCI layout; created if missing. */
  dir: string;
  /** Tag in the layout and, by default, in the registry (default `latest`). */
  tag?: string;
  /** One entry per layer: a size in bytes or a spec. */
  layers: (number | LayerSpec)[];
  /**
   * Two or more: an OCI index with one manifest per platform, each with its own
   * layers of the given sizes. One or none: a single manifest for that platform
   * (default: this machine's, so containerd can unpack it).
   */
  platforms?: Platform[];
  /** Seed for the content (default: random, so every image is unique). */
  seed?: string;
  /**
   * gzip level (default 0: stored deflate blocks). Random bytes do not compress at any
   * level and level 0 is ~5x faster (50 MiB in 0.2 s instead of 1 s); still real gzip.
   */
  gzipLevel?: number;
}

export interface ManifestInfo extends Blob {
  platform: Platform;
  config: Blob;
  layers: Blob[];
}

export interface ImageLayout {
  /** The layout directory. */
  dir: string;
  tag: string;
  /** Digest, size and media type of the top object: the index, or the single manifest. */
  digest: string;
  size: number;
  mediaType: string;
  /** The image manifests (one per platform). */
  manifests: ManifestInfo[];
  /** Every blob a full pull fetches: index (if any), manifests, configs, layers. */
  blobs: Blob[];
  /** Path of a blob in the layout. */
  path(digest: string): string;
  /** A blob's original bytes (reads the whole file: fine up to a few hundred MiB). */
  bytes(digest: string): Buffer;
}

export interface PushedImage extends ImageLayout {
  /** `HOST/REPO:TAG` */
  ref: string;
  /** `HOST/REPO@DIGEST` */
  digestRef: string;
  /** Registry host `127.0.0.1:PORT`. */
  registry: string;
  repo: string;
}

export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' };
  return { os: 'linux', architecture: arch[process.arch] ?? process.arch };
}

const sha256 = (data: Buffer | string): string => 'sha256:' + createHash('sha256').update(data).digest('hex');

/** Writes the OCI layout and describes it. */
export async function buildImage(spec: ImageSpec): Promise<ImageLayout> {
  const tag = spec.tag ?? 'latest';
  const seed = spec.seed ?? randomUUID();
  const blobDir = join(spec.dir, 'blobs', 'sha256');
  mkdirSync(blobDir, { recursive: true });
  const path = (digest: string): string => join(blobDir, digest.replace(/^sha256:/, ''));
  const putJson = (value: unknown, mediaType: string): Blob => {
    const data = Buffer.from(JSON.stringify(value));
    const digest = sha256(data);
    writeFileSync(path(digest), data);
    return { digest, size: data.length, mediaType };
  };

  const platforms = spec.platforms && spec.platforms.length > 0 ? spec.platforms : [hostPlatform()];
  const manifests: ManifestInfo[] = [];
  for (const platform of platforms) {
    const layers: Blob[] = [];
    const diffIds: string[] = [];
    for (const [i, entry] of spec.layers.entries()) {
      const layer = typeof entry === 'number' ? { size: entry } : entry;
      const layerSeed = layer.seed ?? `${seed}/${platform.os}/${platform.architecture}/${i}`;
      const built = await writeLayer(blobDir, {
        name: `layer-${i}.bin`,
        size: layer.size,
        seed: layerSeed,
        gzipLevel: spec.gzipLevel ?? 0,
      });
      layers.push(built.blob);
      diffIds.push(built.diffId);
    }
    const config = putJson(
      {
        architecture: platform.architecture,
        os: platform.os,
        config: { Cmd: ['/layer-0.bin'] },
        rootfs: { type: 'layers', diff_ids: diffIds },
        history: layers.map(() => ({ created_by: 'shoal test harness' })),
      },
      MEDIA.config,
    );
    const manifest = putJson({ schemaVersion: 2, mediaType: MEDIA.manifest, config, layers }, MEDIA.manifest);
    manifests.push({ ...manifest, platform, config, layers });
  }

  let top: Blob;
  if (manifests.length === 1 && manifests[0]) {
    top = manifests[0];
  } else {
    top = putJson(
      {
        schemaVersion: 2,
        mediaType: MEDIA.index,
        manifests: manifests.map((m) => ({ mediaType: m.mediaType, digest: m.digest, size: m.size, platform: m.platform })),
      },
      MEDIA.index,
    );
  }
  writeFileSync(join(spec.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(spec.dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ ...top, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );

  const blobs: Blob[] = [];
  const seen = new Set<string>();
  for (const b of [...(top === manifests[0] ? [] : [top]), ...manifests.flatMap((m) => [m, m.config, ...m.layers])]) {
    if (seen.has(b.digest)) continue;
    seen.add(b.digest);
    blobs.push({ digest: b.digest, size: b.size, mediaType: b.mediaType });
  }
  return {
    dir: spec.dir,
    tag,
    digest: top.digest,
    size: top.size,
    mediaType: top.mediaType,
    manifests,
    blobs,
    path,
    bytes: (digest) => readFileSync(path(digest)),
  };
}

interface LayerInit {
  name: string;
  size: number;
  seed: string;
  gzipLevel: number;
}

/** Streams tar -> gzip -> file, hashing both sides; the blob is renamed to its digest at the end. */
async function writeLayer(blobDir: string, init: LayerInit): Promise<{ blob: Blob; diffId: string }> {
  const uncompressed = createHash('sha256');
  const compressed = createHash('sha256');
  let size = 0;
  const tmp = join(blobDir, `.tmp-${randomUUID()}`);
  await pipeline(
    Readable.from(tarArchive([{ name: init.name, size: init.size, seed: init.seed }])),
    tap((chunk) => uncompressed.update(chunk)),
    createGzip({ level: init.gzipLevel }),
    tap((chunk) => {
      compressed.update(chunk);
      size += chunk.length;
    }),
    createWriteStream(tmp),
  );
  const digest = 'sha256:' + compressed.digest('hex');
  renameSync(tmp, join(blobDir, digest.slice('sha256:'.length)));
  return { blob: { digest, size, mediaType: MEDIA.layer }, diffId: 'sha256:' + uncompressed.digest('hex') };
}

function tap(see: (chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      see(chunk);
      done(null, chunk);
    },
  });
}

export interface PushTarget {
  /** Registry host, `127.0.0.1:PORT` (plain http). */
  registry: string;
  repo: string;
  /** Tag in the registry (default: the layout's tag). */
  tag?: string;
  credentials?: { user: string; password: string };
}

/**
 * Pushes with skopeo 1.9: `--all` keeps the index and every platform, `--preserve-digests`
 * fails rather than let skopeo rewrite a manifest. Checks the registry's digest after.
 */
export async function pushImage(layout: ImageLayout, target: PushTarget): Promise<PushedImage> {
  const tag = target.tag ?? layout.tag;
  const ref = `${target.registry}/${target.repo}:${tag}`;
  const creds = target.credentials ? [`${target.credentials.user}:${target.credentials.password}`] : [];
  // --insecure-policy: do not depend on the host's /etc/containers/policy.json.
  await run('skopeo', [
    '--insecure-policy',
    'copy',
    '--quiet',
    '--all',
    '--preserve-digests',
    '--dest-tls-verify=false',
    ...(creds.length > 0 ? ['--dest-creds', ...creds] : []),
    `oci:${layout.dir}:${layout.tag}`,
    `docker://${ref}`,
  ]);
  const { stdout } = await run('skopeo', [
    'inspect',
    '--raw',
    '--tls-verify=false',
    ...(creds.length > 0 ? ['--creds', ...creds] : []),
    `docker://${ref}`,
  ]);
  const pushed = sha256(stdout);
  if (pushed !== layout.digest) throw new Error(`pushed ${ref} has digest ${pushed}, layout has ${layout.digest}`);
  return { ...layout, ref, digestRef: `${target.registry}/${target.repo}@${layout.digest}`, registry: target.registry, repo: target.repo, tag };
}

/** buildImage then pushImage. */
export async function buildAndPush(spec: ImageSpec & Omit<PushTarget, 'tag'>): Promise<PushedImage> {
  return pushImage(await buildImage(spec), { registry: spec.registry, repo: spec.repo, tag: spec.tag, credentials: spec.credentials });
}
