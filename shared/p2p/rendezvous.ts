/**
 * Rendezvous (highest random weight) hashing: every node that sees the same
 * set of peers picks the same one for a key, with no coordination; when a peer
 * joins or leaves, only the keys it wins or held move.
 */
import { createHash } from 'node:crypto';

/** The candidate whose hash of (peerId, key) is highest; undefined for no candidates. */
export function rendezvousPick<T extends { readonly peerId: string }>(candidates: Iterable<T>, key: string): T | undefined {
  let best: T | undefined;
  let bestScore: Buffer | undefined;
  for (const candidate of candidates) {
    const score = createHash('sha256').update(candidate.peerId).update('\0').update(key).digest();
    // Ties (equal peer ids) go to the first: the same answer for the same list.
    if (bestScore === undefined || Buffer.compare(score, bestScore) > 0) {
      best = candidate;
      bestScore = score;
    }
  }
  return best;
}
