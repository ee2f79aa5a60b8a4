/**
 * Content digests (`algorithm:encoded`), parsed once at the edge and trusted inside.
 * The OCI image spec registers sha256 (required) and sha512; both are supported.
 */
import { createHash, type Hash } from 'node:crypto';

export type DigestAlgorithm = 'sha256' | 'sha512';

export interface Digest {
  readonly algorithm: DigestAlgorithm;
  /** Lowercase hex, 64 characters for sha256, 128 for sha512. */
  readonly hex: string;
  /** `algorithm:hex`, the canonical form. */
  readonly text: string;
}

const HEX_LENGTH: Readonly<Record<DigestAlgorithm, number>> = { sha256: 64, sha512: 128 };

// The image spec's grammar: algorithm-component ([a-z0-9]+) joined by [+._-], then ':' and [a-zA-Z0-9=_-]+.
const GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export class DigestError extends Error {
  /** True when the digest is well formed but of an algorithm Shoal does not implement. */
  readonly unsupported: boolean;
  constructor(message: string, unsupported = false) {
    super(message);
    this.name = 'DigestError';
    this.unsupported = unsupported;
  }
}

export function isDigestLike(text: string): boolean {
  return text.includes(':');
}

export function parseDigest(text: string): Digest {
  if (!GRAMMAR.test(text)) throw new DigestError(`invalid digest "${truncate(text)}"`);
  const colon = text.indexOf(':');
  const algorithm = text.slice(0, colon);
  const hex = text.slice(colon + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new DigestError(`unsupported digest algorithm "${truncate(algorithm)}"`, true);
  }
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[0-9a-f]+$/.test(hex)) {
    throw new DigestError(`invalid ${algorithm} digest "${truncate(text)}": want ${HEX_LENGTH[algorithm]} lowercase hex characters`);
  }
  return { algorithm, hex, text };
}

export function digestOf(data: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): Digest {
  const hex = createHash(algorithm).update(data).digest('hex');
  return { algorithm, hex, text: `${algorithm}:${hex}` };
}

export function newHasher(digest: Digest): Hash {
  return createHash(digest.algorithm);
}

function truncate(text: string): string {
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
