/**
 * Rendezvous (highest random weight) hashing: every node that sees the same
 * set of peers picks the same one for a key, with no coordination; when a peer
 * joins or leaves, only the keys it wins or held move.
 */
import { createHash } from 'node:crypto';

/** The candidate whose hash of (peerId, key) is highest; undefined for no candidates. */
export function rendezvousPick<T extends { readonly peerId: string }>(candidates: Iterable<T>, key: string): T | undefined {
  return rendezvousOrder(candidates, key)[0];
}

/** The candidates by their hash of (peerId, key), highest first; ties (equal peer ids) keep their order. */
export function rendezvousOrder<T extends { readonly peerId: string }>(candidates: Iterable<T>, key: string): T[] {
  const scored = [...candidates].map((candidate) => ({ candidate, score: createHash('sha256').update(candidate.peerId).update('\0').update(key).digest() }));
  return scored.sort((a, b) => Buffer.compare(b.score, a.score)).map((s) => s.candidate);
}

/**
 * The order in which node `asker` tries the holders of `key`: one of its own
 * for each asker and key, so the nodes that want a blob spread over the nodes
 * that hold it rather than all asking the same one, and the same every time.
 */
export function askOrder<T extends { readonly peerId: string }>(holders: Iterable<T>, asker: string, key: string): T[] {
  return rendezvousOrder(holders, `${asker}\0${key}`);
}
