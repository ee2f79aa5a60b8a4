/**
 * A large blob straight into containerd's content store, without a registry
 * round trip or an unpack: seeded random bytes (incompressible) are hashed in
 * a first pass, then piped into `ctr content ingest` with the expected digest
 * and size, so containerd checks them as it does for a pull.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Containerd } from '../harness/containerd.ts';
import { randomBytesFromSeed } from '../harness/tar.ts';

export interface IngestedBlob {
  digest: string;
  size: number;
  /** The blob's file in containerd's content directory. */
  path: string;
}

const INGEST_TIMEOUT_MS = 300_000;

export async function ingestRandomBlob(containerd: Containerd, size: number, seed: string): Promise<IngestedBlob> {
  const hash = createHash('sha256');
  for (const chunk of randomBytesFromSeed(seed, size)) hash.update(chunk);
  const hex = hash.digest('hex');
  const digest = `sha256:${hex}`;

  const args = ['--address', containerd.sock, '-n', containerd.namespace, 'content', 'ingest'];
  args.push('--expected-digest', digest, '--expected-size', String(size), `shoal-bench-${hex.slice(0, 12)}`);
  const child = spawn('ctr', args, { stdio: ['pipe', 'ignore', 'pipe'], timeout: INGEST_TIMEOUT_MS, killSignal: 'SIGKILL' });
  const stderr: Buffer[] = [];
  child.stderr.on('data', (c: Buffer) => stderr.push(c));
  const exited = new Promise<number | string>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  try {
    await pipeline(Readable.from(randomBytesFromSeed(seed, size)), child.stdin);
  } catch (err) {
    // ctr died early (EPIPE): its own message says why.
    const code = await exited;
    throw new Error(`ctr content ingest failed (${String(code)}): ${Buffer.concat(stderr).toString().trim() || (err as Error).message}`);
  }
  const code = await exited;
  if (code !== 0) throw new Error(`ctr content ingest failed (${String(code)}): ${Buffer.concat(stderr).toString().trim()}`);
  // Content no image or lease refers to is garbage to containerd's collector: pin it.
  await containerd.ctr(['content', 'label', digest, 'containerd.io/gc.root=shoal-bench']);
  return { digest, size, path: join(containerd.contentPath, 'blobs', 'sha256', hex) };
}
