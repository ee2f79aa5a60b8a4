/**
 * Minimal ustar writer for test layers: regular files of seeded random bytes.
 * The bytes are an AES-256-CTR keystream keyed by sha256(seed): fast (hardware
 * AES, ~1 GB/s), incompressible (a 50 MiB file gzips to ~50 MiB) and
 * deterministic, so the same seed and size give the same layer digest.
 */
import { createCipheriv, createHash } from 'node:crypto';

const BLOCK = 512;
const CHUNK = 1 << 20;

export interface TarFile {
  /** Path inside the archive, at most 100 bytes (no prefix field used). */
  name: string;
  size: number;
  /** Content seed; same seed and size, same bytes. */
  seed: string;
}

/** Yields `size` pseudo-random bytes derived from seed, in chunks of up to 1 MiB. */
export function* randomBytesFromSeed(seed: string, size: number): Generator<Buffer> {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(CHUNK);
  for (let left = size; left > 0; left -= CHUNK) {
    yield cipher.update(left >= CHUNK ? zeros : zeros.subarray(0, left));
  }
}

function octal(value: number, width: number): string {
  // width-1 digits then NUL, as ustar expects.
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

/** The 512-byte ustar header of a regular file (mode 0644, uid/gid 0, mtime 0 for reproducibility). */
export function ustarHeader(name: string, size: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`tar name too long: ${name}`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(0o644, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(0, 12), 136, 'ascii');
  h.write('0', 156, 'ascii'); // typeflag: regular file
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  // The checksum is computed with its own field read as eight spaces.
  h.fill(' ', 148, 156);
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}

/** A whole tar archive: each file's header, content and padding, then the two zero blocks. */
export function* tarArchive(files: TarFile[]): Generator<Buffer> {
  for (const file of files) {
    yield ustarHeader(file.name, file.size);
    yield* randomBytesFromSeed(file.seed, file.size);
    const pad = (BLOCK - (file.size % BLOCK)) % BLOCK;
    if (pad > 0) yield Buffer.alloc(pad);
  }
  yield Buffer.alloc(2 * BLOCK);
}
