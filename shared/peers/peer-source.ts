/**
 * Content this node lacks, fetched from the mirrors of nodes that advertise
 * it. Every byte is checked against its digest; a peer that sends wrong bytes
 * is quarantined, one that fails or stalls mid-body is replaced by the next
 * provider from the byte where it stopped.
 */
import { parseDigest, type Digest } from '../digest.ts';
import type { Logger } from '../log.ts';
import { MANIFEST_MEDIA_TYPES, manifestMediaType, MAX_MANIFEST_BYTES } from '../media-types.ts';
import { contentKey, tagKey } from '../p2p/keys.ts';
import type { Provider, Router } from '../p2p/router.ts';
import { ContentMismatchError, readVerified } from '../verify.ts';
import type { PeerFailureReason, PeerMetrics } from './metrics.ts';
import type { ManifestDescriptor as Descriptor } from '../distribution/types.ts';
import { BlobFromPeers, type PeerBlob, type PeerCalls } from './peer-blob.ts';
import { contentLength, PeerClient, PeerIdleError, type PeerRequest, type PeerResponse } from './peer-client.ts';
import { Providers } from './providers.ts';
import { Quarantine } from './quarantine.ts';

export interface PeerSourceInit {
  router: Router;
  /** Port of every peer's mirror (`--peer-registry-port`). Default 5000. */
  peerRegistryPort?: number;
  /** Longest wait for the first provider before a miss (`--resolve-timeout`). Default 20 ms. */
  resolveTimeoutMs?: number;
  /** Providers tried per request, the first included (`--resolve-retries`). Default 3. */
  resolveRetries?: number;
  /**
   * Longest wait for another provider once a failover wants one (the lookup
   * searches further only then). Default 500 ms: DHT lookups in a cluster find
   * their providers in a few ms, so this only bounds how long a failover waits
   * for a straggler, and a request with no good peer still gets its 404 well
   * within containerd's patience.
   */
  lookupTimeoutMs?: number;
  /**
   * Longest silence from a peer, waiting for its response or its next byte,
   * before it is cut and the next provider resumes (`--peer-idle-timeout`).
   * Default 5 s: a healthy peer streams 1 MiB chunks from its content store
   * with gaps of milliseconds, and even a loaded node (disk contention, GC,
   * a busy event loop) stays far below a second; 5 s leaves that margin while a
   * stalled peer costs a pull seconds, not minutes, and no bytes already sent.
   */
  peerIdleTimeoutMs?: number;
  /** How long a peer that sent wrong bytes is skipped. Default 5 min. */
  quarantineMs?: number;
  logger: Logger;
  metrics: PeerMetrics;
}

export const PEER_SOURCE_DEFAULTS = {
  peerRegistryPort: 5000,
  resolveTimeoutMs: 20,
  resolveRetries: 3,
  lookupTimeoutMs: 500,
  peerIdleTimeoutMs: 5000,
  quarantineMs: 5 * 60_000,
} as const;

/** A manifest from a peer, checked whole against its digest. */
export interface PeerManifest {
  readonly bytes: Buffer;
  readonly mediaType: string;
}

const MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(', ');
/** Room in a lookup for providers that will be skipped as quarantined. */
const MAX_SKIPPED_PER_LOOKUP = 16;

export class PeerSource {
  readonly #router: Router;
  readonly #resolveTimeoutMs: number;
  readonly #resolveRetries: number;
  readonly #lookupTimeoutMs: number;
  readonly #quarantine: Quarantine;
  readonly #client: PeerClient;
  readonly #logger: Logger;
  readonly #metrics: PeerMetrics;
  readonly #calls: PeerCalls = {
    request: (provider, req) => this.#request(provider, req),
    failed: (provider, reason, fields) => this.#failed(provider, reason, fields),
    corrupt: (peerIds, digest, err) => this.#corrupt(peerIds, digest, err),
  };

  constructor(init: PeerSourceInit) {
    const d = PEER_SOURCE_DEFAULTS;
    this.#router = init.router;
    this.#resolveTimeoutMs = init.resolveTimeoutMs ?? d.resolveTimeoutMs;
    this.#resolveRetries = Math.max(1, init.resolveRetries ?? d.resolveRetries);
    this.#lookupTimeoutMs = Math.max(this.#resolveTimeoutMs, init.lookupTimeoutMs ?? d.lookupTimeoutMs);
    this.#quarantine = new Quarantine({ durationMs: init.quarantineMs ?? d.quarantineMs });
    this.#client = new PeerClient({ port: init.peerRegistryPort ?? d.peerRegistryPort, idleTimeoutMs: init.peerIdleTimeoutMs ?? d.peerIdleTimeoutMs });
    this.#logger = init.logger;
    this.#metrics = init.metrics;
  }

  /** The descriptor a peer's image record gives the tag (`name` as containerd records it), or undefined. */
  async resolveTag(registry: string, name: string, tag: string, signal: AbortSignal): Promise<Descriptor | undefined> {
    const providers = this.#lookup(tagKey(registry, name, tag), signal);
    try {
      const path = `/v2/${name}/manifests/${tag}?ns=${encodeURIComponent(registry)}`;
      for (let provider = await providers.next(); provider !== undefined; provider = await providers.next()) {
        const res = await this.#request(provider, { method: 'HEAD', path, headers: { Accept: MANIFEST_ACCEPT }, signal });
        if (res === undefined) continue;
        res.discard();
        if (res.status !== 200) {
          this.#failed(provider, 'status', { status: res.status, path });
          continue;
        }
        const descriptor = manifestDescriptor(res);
        if (descriptor !== undefined) return descriptor;
        this.#failed(provider, 'invalid', { path, reason: 'no valid digest, manifest media type or size in the response' });
      }
      return undefined;
    } finally {
      providers.close();
    }
  }

  /** A manifest from the first peer that sends its bytes right, or undefined. */
  async fetchManifest(name: string, digest: Digest, signal: AbortSignal): Promise<PeerManifest | undefined> {
    const providers = this.#lookup(contentKey(digest), signal);
    try {
      const path = `/v2/${name}/manifests/${digest.text}`;
      for (let provider = await providers.next(); provider !== undefined; provider = await providers.next()) {
        const res = await this.#request(provider, { method: 'GET', path, headers: { Accept: MANIFEST_ACCEPT }, signal });
        if (res === undefined) continue;
        const size = contentLength(res.headers);
        if (res.status !== 200 || size === undefined || size > MAX_MANIFEST_BYTES) {
          res.discard();
          this.#failed(provider, res.status === 200 ? 'invalid' : 'status', { status: res.status, path });
          continue;
        }
        let bytes: Buffer;
        try {
          bytes = await readVerified(res.body, digest, size);
        } catch (err) {
          res.discard();
          if (signal.aborted) throw err;
          if (err instanceof ContentMismatchError) this.#corrupt([provider.peerId], digest, err);
          else this.#failed(provider, err instanceof PeerIdleError ? 'idle' : 'truncated', { path, error: err });
          continue;
        }
        const inferred = manifestMediaType(bytes);
        // Right bytes that are no manifest: every peer would send the same.
        if (inferred === undefined) return undefined;
        const claimed = res.headers['content-type'];
        return { bytes, mediaType: claimed !== undefined && MANIFEST_MEDIA_TYPES.includes(claimed) ? claimed : inferred };
      }
      return undefined;
    } finally {
      providers.close();
    }
  }

  /** A blob's size as the first peer that has it states it (HEAD: no bytes to check), or undefined. */
  async blobSize(name: string, digest: Digest, signal: AbortSignal): Promise<number | undefined> {
    const providers = this.#lookup(contentKey(digest), signal);
    try {
      const path = `/v2/${name}/blobs/${digest.text}`;
      for (let provider = await providers.next(); provider !== undefined; provider = await providers.next()) {
        const res = await this.#request(provider, { method: 'HEAD', path, signal });
        if (res === undefined) continue;
        res.discard();
        const size = contentLength(res.headers);
        if (res.status === 200 && size !== undefined) return size;
        this.#failed(provider, res.status === 200 ? 'invalid' : 'status', { status: res.status, path });
      }
      return undefined;
    } finally {
      providers.close();
    }
  }

  /**
   * Starts fetching a blob from the first provider that answers with its
   * size; undefined when none does (nothing has been sent to anyone yet).
   * The whole blob is always fetched: a slice cannot be checked on its own.
   */
  async openBlob(name: string, digest: Digest, signal: AbortSignal): Promise<PeerBlob | undefined> {
    const providers = this.#lookup(contentKey(digest), signal);
    const path = `/v2/${name}/blobs/${digest.text}`;
    try {
      for (let provider = await providers.next(); provider !== undefined; provider = await providers.next()) {
        const res = await this.#request(provider, { method: 'GET', path, signal });
        if (res === undefined) continue;
        const size = contentLength(res.headers);
        if (res.status === 200 && size !== undefined) {
          return new BlobFromPeers({ digest, path, size, first: { provider, res }, providers, signal, calls: this.#calls });
        }
        res.discard();
        this.#failed(provider, res.status === 200 ? 'invalid' : 'status', { status: res.status, path });
      }
    } catch (err) {
      providers.close();
      throw err;
    }
    providers.close();
    return undefined;
  }

  /** Whether a peer is skipped now for having sent wrong bytes. */
  isQuarantined(peerId: string): boolean {
    return this.#quarantine.has(peerId);
  }

  /** Peers whose bytes went into content that did not match, found by another path (the upstream fallback's relay): skipped for a while here too. */
  reportCorrupt(peerIds: Iterable<string>, digest: Digest, err: ContentMismatchError): void {
    this.#corrupt(peerIds, digest, err);
  }

  /** Drops pooled connections to peers. */
  close(): void {
    this.#client.close();
  }

  #lookup(key: string, signal: AbortSignal): Providers {
    return new Providers({
      router: this.#router,
      key,
      want: this.#resolveRetries,
      lookupCount: this.#resolveRetries + Math.min(this.#quarantine.size, MAX_SKIPPED_PER_LOOKUP),
      firstTimeoutMs: this.#resolveTimeoutMs,
      laterTimeoutMs: this.#lookupTimeoutMs,
      skip: (p) => this.#quarantine.has(p.peerId),
      signal,
      onResolved: (outcome, seconds) => this.#metrics.resolveDuration.observe({ outcome }, seconds),
    });
  }

  async #request(provider: Provider, req: PeerRequest): Promise<PeerResponse | undefined> {
    // Caught while the lookup ran or since: skip it here too.
    if (this.#quarantine.has(provider.peerId)) return undefined;
    try {
      return await this.#client.request(provider, req);
    } catch (err) {
      if (req.signal.aborted) throw err;
      this.#failed(provider, err instanceof PeerIdleError ? 'idle' : 'unreachable', { path: req.path, error: err });
      return undefined;
    }
  }

  #failed(provider: Provider, reason: PeerFailureReason, fields: Record<string, unknown>): void {
    this.#metrics.peerFailures.inc({ reason });
    // A 404 or a gone peer is routine (records outlive content and pods); a stall or a cut is not.
    const level = reason === 'status' || reason === 'unreachable' ? 'debug' : 'warn';
    this.#logger[level]('peer passed over', { peerId: provider.peerId, host: provider.host, reason, ...fields });
  }

  #corrupt(peerIds: Iterable<string>, digest: Digest, err: ContentMismatchError): void {
    const ids = [...peerIds];
    for (const id of ids) this.#quarantine.add(id);
    this.#metrics.corrupt.inc({ source: 'peer' });
    this.#metrics.peerFailures.inc({ reason: 'corrupt' });
    this.#logger.error('peer content does not match its digest; peers quarantined', { digest: digest.text, peers: ids, error: err });
  }
}

export type { PeerBlob };

/** The descriptor in a manifest HEAD response, when its headers make one. */
function manifestDescriptor(res: PeerResponse): Descriptor | undefined {
  const digestHeader = res.headers['docker-content-digest'];
  const mediaType = res.headers['content-type'];
  const size = contentLength(res.headers);
  if (typeof digestHeader !== 'string' || mediaType === undefined || !MANIFEST_MEDIA_TYPES.includes(mediaType)) return undefined;
  if (size === undefined || size > MAX_MANIFEST_BYTES) return undefined;
  let digest: Digest;
  try {
    digest = parseDigest(digestHeader);
  } catch {
    return undefined;
  }
  return { digest, mediaType, size };
}
