/**
 * Content that neither this node nor its peers hold, from the upstream
 * registry, with one download per blob for the whole cluster.
 *
 * Each blob has one downloader: the node that rendezvous hashing over the live
 * peers (this node included) picks for its digest. The downloader fetches it
 * into its spool, where every local request and every peer that asks reads it
 * as it arrives. Any other node asks the downloader's mirror for it (with
 * UPSTREAM_FETCH_HEADER) and relays the answer to its client (relay.ts). When
 * the downloader cannot be reached or refuses, the node downloads the blob
 * into its own spool; when it dies mid-blob, the relay goes on from upstream at
 * the byte it has: a pull never fails where containerd alone would have
 * succeeded. A downloader that sent wrong bytes is skipped for a while, like
 * any lying peer. Nodes that disagree about who is live (a peer joining
 * or leaving) can both download a blob once; that costs bytes, never
 * correctness, and a node asked as the downloader never asks another.
 */
import type { Digest } from '../../shared/digest.ts';
import type { UpstreamClient } from '../../shared/distribution/client.ts';
import type { UpstreamBlob, OpenBlobOptions } from '../../shared/distribution/blob.ts';
import type { RegistryCredentialLookup } from '../../shared/distribution/docker-config.ts';
import { UpstreamError, type ManifestDescriptor, type RegistryCredentials } from '../../shared/distribution/types.ts';
import type { Logger } from '../../shared/log.ts';
import { PeerClient, contentLength, type PeerResponse } from '../../shared/peers/peer-client.ts';
import { rendezvousPick } from '../../shared/p2p/rendezvous.ts';
import type { PeerSource } from '../../shared/peers/peer-source.ts';
import type { LivePeers, Provider } from '../../shared/p2p/router.ts';
import type { MirrorMetrics } from '../metrics.ts';
import type { BlobSource, SpoolEntry, SpoolReader } from '../spool/entry.ts';
import type { Slice } from '../../shared/verify.ts';
import { SPOOL_DEFAULTS, type Spool } from '../spool/spool.ts';
import { isResumableUpstreamFailure, openRest, upstreamSource, type UpstreamSourceInit } from '../spool/upstream-source.ts';
import { RelayedBlob } from './relay.ts';

/**
 * A blob the fallback hands to one client: its download in this node's spool,
 * or a relay of the answer of the node downloading it.
 */
export interface FallbackBlob {
  readonly size: number;
  /** Whether bytes read now come from a download still in progress on this node. */
  readonly partial: boolean;
  /** Its bytes, checked; a spool entry just removed throws SpoolEntryGoneError. */
  reader(slice?: Slice): SpoolReader;
  /** Lets go of it unread (a HEAD, a bad Range). */
  release(): void;
}

/** Beside Shoal-Peer-Request: "download it from upstream for me if you do not have it". */
export const UPSTREAM_FETCH_HEADER = 'Shoal-Upstream-Fetch';

export interface UpstreamFallbackInit {
  client: Pick<UpstreamClient, 'resolve' | 'getManifest' | 'openBlob'>;
  spool: Spool;
  /** The node's own pull credentials (`--registry-credentials-file`). Default: anonymous. */
  credentials?: RegistryCredentialLookup;
  /** This node's peer id: a candidate downloader beside the live peers. */
  selfId: string;
  peers: LivePeers;
  /** Peers that sent wrong bytes are not picked as downloaders; a downloader whose bytes do not match is reported. */
  quarantine: Pick<PeerSource, 'isQuarantined' | 'reportCorrupt'>;
  /** Port of every peer's mirror. */
  peerRegistryPort: number;
  /** Longest silence from upstream before a blob request is cut and resumed (`--upstream-idle-timeout`). */
  upstreamIdleTimeoutMs: number;
  /** Longest silence from the downloading node, on top of its own waits for upstream (`--peer-idle-timeout`). */
  peerIdleTimeoutMs: number;
  logger: Logger;
  metrics: MirrorMetrics;
}

export interface UpstreamManifest {
  readonly bytes: Buffer;
  readonly mediaType: string;
}

export class UpstreamFallback {
  readonly #init: UpstreamFallbackInit;
  readonly #owners: PeerClient;
  readonly #closing = new AbortController();
  /** The start of each download from upstream until it is in the spool: one per digest however many ask at once. */
  readonly #starting = new Map<string, Promise<SpoolEntry | undefined>>();

  constructor(init: UpstreamFallbackInit) {
    this.#init = init;
    // A downloader goes silent while upstream does: it notices after one idle timeout, then waits up to
    // another for the answer to its request again. Cut sooner, every relay would go upstream itself.
    this.#owners = new PeerClient({ port: init.peerRegistryPort, idleTimeoutMs: 2 * init.upstreamIdleTimeoutMs + init.peerIdleTimeoutMs });
  }

  /** The digest's download in this node's spool, in progress or complete. */
  spooled(digest: Digest): SpoolEntry | undefined {
    const entry = this.#init.spool.get(digest);
    return entry?.state === 'failed' ? undefined : entry;
  }

  /** What a tag names upstream now (HEAD, else GET), or undefined when upstream will not say. */
  async resolveTag(registry: string, repository: string, tag: string, signal: AbortSignal): Promise<ManifestDescriptor | undefined> {
    try {
      const descriptor = await this.#init.client.resolve({ registry, repository, tag, digest: undefined, original: `${registry}/${repository}:${tag}` }, this.#credentials(registry), signal);
      this.#init.metrics.upstreamRequests.inc({ registry, code: '200' });
      return descriptor;
    } catch (err) {
      this.#failed(registry, err, { repository, tag });
      return undefined;
    }
  }

  /** A manifest by digest, checked whole, or undefined. */
  async fetchManifest(registry: string, repository: string, digest: Digest, signal: AbortSignal): Promise<UpstreamManifest | undefined> {
    try {
      const { bytes, descriptor } = await this.#init.client.getManifest(registry, repository, digest, this.#credentials(registry), signal);
      this.#init.metrics.upstreamRequests.inc({ registry, code: '200' });
      this.#init.metrics.upstreamBytes.inc({ registry }, bytes.length);
      return { bytes, mediaType: descriptor.mediaType };
    } catch (err) {
      this.#failed(registry, err, { repository, digest: digest.text });
      return undefined;
    }
  }

  /**
   * The blob, for one client: relayed from its downloader, or its download in
   * this node's spool, started if need be; undefined when neither the
   * downloader nor upstream will send it (or the spool is full). `asked`:
   * another node sent the request to this one as the blob's downloader, so
   * this node downloads it itself whoever it thinks owns it. `signal`: the
   * client went away (it ends a relay, never a download others may share).
   */
  async blob(registry: string, repository: string, digest: Digest, asked: boolean, signal: AbortSignal): Promise<FallbackBlob | undefined> {
    const existing = this.spooled(digest);
    if (existing !== undefined) return existing;
    let starting = this.#starting.get(digest.text);
    if (starting !== undefined) return starting;
    const owner = asked ? undefined : await this.#owner(digest);
    if (owner !== undefined) {
      const res = await this.#askOwner(owner, registry, repository, digest, signal);
      if (res !== undefined) return this.#relay(owner, res, registry, repository, digest, signal);
      signal.throwIfAborted();
    }
    starting = this.#starting.get(digest.text);
    if (starting === undefined) {
      starting = this.#download(registry, repository, digest, asked).finally(() => this.#starting.delete(digest.text));
      this.#starting.set(digest.text, starting);
    }
    return starting;
  }

  /** Cuts the requests to downloaders. The spool is closed by its owner. */
  close(): void {
    this.#closing.abort();
    this.#owners.close();
  }

  /** Downloads the blob from upstream into the spool. */
  async #download(registry: string, repository: string, digest: Digest, asked: boolean): Promise<SpoolEntry | undefined> {
    const { spool, logger } = this.#init;
    let opened: UpstreamBlob;
    try {
      opened = await this.#openBlob(registry, repository, digest, { signal: this.#closing.signal, idleTimeoutMs: this.#init.upstreamIdleTimeoutMs });
    } catch (err) {
      this.#failed(registry, err, { repository, digest: digest.text });
      return undefined;
    }
    const started = this.spooled(digest);
    if (started !== undefined) {
      opened.close();
      return started;
    }
    logger.debug('downloading a blob from upstream', { registry, repository, digest: digest.text, size: opened.size, asked });
    const source = upstreamSource({ ...this.#upstream(registry, repository, digest), opened });
    let entry: SpoolEntry | undefined;
    try {
      entry = spool.download(digest, opened.size, this.#counted(source, registry));
    } finally {
      // The download reads the first answer, or drops it when it asks again. One that failed before
      // taking it (its file could not be made), or never began, would leave it open with its connection.
      if (entry === undefined) opened.close();
      else void entry.done.then(() => opened.close());
    }
    if (entry === undefined) logger.warn('spool full: not downloading from upstream; the client goes upstream itself', { digest: digest.text, size: opened.size, maxBytes: spool.maxBytes });
    return entry;
  }

  /** The live peer that downloads `digest` for the cluster; undefined: this node. */
  async #owner(digest: Digest): Promise<Provider | undefined> {
    const self: Provider = { peerId: this.#init.selfId, host: '' };
    // A peer that lied is skipped like any other: the next in rendezvous order downloads.
    const peers = (await this.#init.peers.livePeers().catch(() => [])).filter((p) => !this.#init.quarantine.isQuarantined(p.peerId));
    const owner = rendezvousPick([self, ...peers], digest.text);
    return owner === undefined || owner.peerId === self.peerId ? undefined : owner;
  }

  /** The downloader's answer with the blob's size, or undefined (it failed or refused: go upstream). */
  async #askOwner(owner: Provider, registry: string, repository: string, digest: Digest, signal: AbortSignal): Promise<PeerResponse | undefined> {
    const path = `/v2/${repository}/blobs/${digest.text}?ns=${encodeURIComponent(registry)}`;
    try {
      const res = await this.#owners.request(owner, { method: 'GET', path, headers: { [UPSTREAM_FETCH_HEADER]: '1' }, signal: AbortSignal.any([this.#closing.signal, signal]) });
      if (res.status === 200 && contentLength(res.headers) !== undefined) return res;
      res.discard();
      this.#init.logger.debug('the downloading node did not send the blob; going upstream', { owner: owner.peerId, host: owner.host, digest: digest.text, status: res.status });
    } catch (err) {
      this.#init.logger.debug('the downloading node is unreachable; going upstream', { owner: owner.peerId, host: owner.host, digest: digest.text, error: err as Error });
    }
    return undefined;
  }

  /** The downloader's answer relayed to one client; the rest from upstream if the downloader fails mid-way. */
  #relay(owner: Provider, res: PeerResponse, registry: string, repository: string, digest: Digest, signal: AbortSignal): RelayedBlob {
    const size = contentLength(res.headers)!;
    return new RelayedBlob({
      digest,
      size,
      first: res,
      resume: async (offset, signal) => {
        this.#init.logger.info('the downloading node failed mid-blob; resuming from upstream', { digest: digest.text, offset, size });
        return this.#countedBody(await openRest(this.#upstream(registry, repository, digest), size, offset, signal), registry);
      },
      maxResumes: SPOOL_DEFAULTS.maxResumes,
      isResumable: isResumableUpstreamFailure,
      // Which of the downloader and upstream lied cannot be told from one digest: the downloader is skipped for a while.
      onCorrupt: (err) => this.#init.quarantine.reportCorrupt([owner.peerId], digest, err),
      signal: AbortSignal.any([this.#closing.signal, signal]),
    });
  }

  /** What upstreamSource and openRest need for the blob: the counted client, the node's credentials, the idle timeout. */
  #upstream(registry: string, repository: string, digest: Digest): Omit<UpstreamSourceInit, 'opened'> {
    return {
      client: { openBlob: (r, repo, d, _credentials, options) => this.#openBlob(r, repo, d, options) },
      registry,
      repository,
      digest,
      credentials: [],
      idleTimeoutMs: this.#init.upstreamIdleTimeoutMs,
    };
  }

  async #openBlob(registry: string, repository: string, digest: Digest, options: OpenBlobOptions): Promise<UpstreamBlob> {
    const blob = await this.#init.client.openBlob(registry, repository, digest, this.#credentials(registry), options);
    this.#init.metrics.upstreamRequests.inc({ registry, code: (options.offset ?? 0) > 0 ? '206' : '200' });
    return blob;
  }

  #counted(source: BlobSource, registry: string): BlobSource {
    return async (offset, signal) => this.#countedBody(await source(offset, signal), registry);
  }

  async *#countedBody(body: AsyncIterable<Uint8Array>, registry: string): AsyncGenerator<Uint8Array> {
    for await (const chunk of body) {
      this.#init.metrics.upstreamBytes.inc({ registry }, chunk.length);
      yield chunk;
    }
  }

  #credentials(registry: string): readonly RegistryCredentials[] {
    return this.#init.credentials?.credentialsFor(registry) ?? [];
  }

  #failed(registry: string, err: unknown, fields: Record<string, unknown>): void {
    if (this.#closing.signal.aborted) return;
    const code = err instanceof UpstreamError ? String(err.status ?? err.failure) : 'error';
    this.#init.metrics.upstreamRequests.inc({ registry, code });
    // A 404 is routine (a digest of another registry); anything else the operator should see.
    const level = err instanceof UpstreamError && err.failure === 'not-found' ? 'debug' : 'warn';
    this.#init.logger[level]('upstream did not serve; the client goes upstream itself', { registry, ...fields, code, error: err as Error });
  }
}
