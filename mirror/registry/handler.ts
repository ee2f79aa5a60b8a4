/**
 * The pull side of the OCI distribution API over the node's content store.
 * Every byte sent is checked against its digest; a mismatch aborts the
 * response (blobs) or turns into a 404 (manifests, which are checked whole
 * before anything is sent), so the client moves on and never keeps bad bytes.
 * What the node lacks is fetched from peers when a PeerSource is given, and
 * then from upstream when an UpstreamFallback is given, with the same
 * guarantees.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { canonicalRepository } from '../../shared/reference.ts';
import type { Digest } from '../../shared/digest.ts';
import type { Logger } from '../../shared/log.ts';
import { streamToResponse } from '../../shared/stream-response.ts';
import { manifestMediaType, MAX_MANIFEST_BYTES } from '../../shared/media-types.ts';
import { ContentMismatchError } from '../../shared/verify.ts';
import type { MirroredRegistry } from '../../shared/registries.ts';
import { readAll, type ContentStore, type Descriptor } from '../store/store.ts';
import type { MirrorMetrics } from '../metrics.ts';
import { isPeerRequest } from '../../shared/peers/peer-client.ts';
import type { PeerSource } from '../../shared/peers/peer-source.ts';
import { SpoolEntryGoneError } from '../spool/entry.ts';
import { UPSTREAM_FETCH_HEADER, type FallbackBlob, type UpstreamFallback } from '../upstream/fallback.ts';
import { RegistryError } from './errors.ts';
import { parseRange, type ByteRange } from './range.ts';
import { parseRoute, type Route } from './route.ts';

export interface RegistryHandlerInit {
  store: ContentStore;
  /** Registries whose tags are served; empty: every registry. */
  mirroredRegistries: readonly MirroredRegistry[];
  logger: Logger;
  metrics: MirrorMetrics;
  /**
   * Other nodes' mirrors, asked for what the local store lacks. Absent: the
   * local store only. Never asked on behalf of a request from a peer
   * (Shoal-Peer-Request), so a miss does not travel on from peer to peer.
   */
  peers?: PeerSource;
  /**
   * The registry itself, for what neither this node nor its peers hold: only
   * for requests that name a mirrored registry (`?ns=`). A peer's request is
   * answered from this node's spool, and started there only when it carries
   * UPSTREAM_FETCH_HEADER (this node is the blob's downloader). Absent: 404.
   */
  upstream?: UpstreamFallback;
}

/** Where a local miss may still be found, for one request. */
interface Remote {
  readonly peers: PeerSource;
  /** Aborts when the client goes away. */
  readonly signal: AbortSignal;
  /** The request's registry (a mirrored one) when upstream may be asked. */
  readonly upstream: { readonly fallback: UpstreamFallback; readonly registry: string } | undefined;
}

/** A tag's descriptor, and where it came from: this node's image records, a peer's, or upstream. */
interface Resolved {
  readonly descriptor: Descriptor;
  readonly from: 'local' | 'peer' | 'upstream';
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

// A `?ns=` value: host[:port], as containerd sends it.
const NS_RE = /^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$/;

export function createRegistryHandler(init: RegistryHandlerInit): Handler {
  const { store, logger, metrics } = init;
  const mirrored = new Set(init.mirroredRegistries.map((r) => r.host));
  /** The registry a request names with `?ns=`, when it is one this node serves. */
  const mirroredNamespace = (route: Route): string | undefined => {
    if (route.kind === 'base' || route.namespace === undefined || !NS_RE.test(route.namespace)) return undefined;
    return mirrored.size === 0 || mirrored.has(route.namespace) ? route.namespace : undefined;
  };

  async function handle(req: IncomingMessage, res: ServerResponse, route: Route, signal: AbortSignal): Promise<void> {
    const head = req.method === 'HEAD';
    const registry = mirroredNamespace(route);
    const upstream = init.upstream !== undefined && registry !== undefined ? { fallback: init.upstream, registry } : undefined;
    const remote: Remote | undefined = init.peers !== undefined && !isPeerRequest(req.headers) ? { peers: init.peers, signal, upstream } : undefined;
    switch (route.kind) {
      case 'base':
        res.setHeader('Content-Type', 'application/json');
        res.setHeader('Content-Length', 2);
        res.end(head ? undefined : '{}');
        return;
      case 'manifest': {
        const resolved = route.reference.kind === 'tag' ? await resolveTag(route.name, route.reference.tag, route.namespace, remote) : undefined;
        const digest = route.reference.kind === 'digest' ? route.reference.digest : resolved?.descriptor.digest;
        if (digest === undefined) {
          metrics.requests.inc({ source: 'miss', kind: 'manifest' });
          throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: route.name, reference: referenceText(route) });
        }
        await sendManifest(res, head, digest, resolved, route, remote);
        return;
      }
      case 'blob':
        if (remote === undefined && isPeerRequest(req.headers) && init.upstream !== undefined) {
          await sendBlobToPeer(req, res, head, route, init.upstream, upstream?.registry, signal);
          return;
        }
        await sendBlob(req, res, head, route, remote);
        return;
    }
  }

  async function resolveTag(name: string, tag: string, namespace: string | undefined, remote: Remote | undefined): Promise<Resolved | undefined> {
    // Without ?ns= a tag cannot be placed in a registry.
    if (namespace === undefined || !NS_RE.test(namespace)) return undefined;
    if (mirrored.size > 0 && !mirrored.has(namespace)) return undefined;
    const key = { registry: namespace, name: canonicalRepository(namespace, name), tag };
    const local = await store.resolveTag(key);
    if (local !== undefined) return { descriptor: local, from: 'local' };
    if (remote === undefined) return undefined;
    const fromPeer = await remote.peers.resolveTag(key.registry, key.name, key.tag, remote.signal);
    if (fromPeer !== undefined) return { descriptor: fromPeer, from: 'peer' };
    const fromUpstream = await remote.upstream?.fallback.resolveTag(remote.upstream.registry, name, tag, remote.signal);
    return fromUpstream === undefined ? undefined : { descriptor: fromUpstream, from: 'upstream' };
  }

  async function sendManifest(res: ServerResponse, head: boolean, digest: Digest, resolved: Resolved | undefined, route: Route & { kind: 'manifest' }, remote: Remote | undefined): Promise<void> {
    const unknown = () => {
      metrics.requests.inc({ source: 'miss', kind: 'manifest' });
      return new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: route.name, reference: referenceText(route) });
    };
    const size = await store.size(digest);
    if (size === undefined && remote !== undefined) {
      await sendPeerManifest(res, head, digest, resolved, route, remote, unknown);
      return;
    }
    if (size === undefined || size > MAX_MANIFEST_BYTES) throw unknown();
    let mediaType = resolved?.descriptor.mediaType;
    let body: Buffer | undefined;
    // A HEAD by tag has all it needs from the image record; anything else reads (and checks) the bytes.
    if (!head || mediaType === undefined) {
      try {
        body = await readAll(store, digest, size);
      } catch (err) {
        if (!(err instanceof ContentMismatchError)) throw err;
        metrics.corrupt.inc({ source: 'local' });
        logger.error('stored manifest does not match its digest; not serving it', { digest: digest.text, error: err });
        throw unknown();
      }
      mediaType ??= manifestMediaType(body);
      if (mediaType === undefined) throw unknown();
    }
    metrics.requests.inc({ source: 'local', kind: 'manifest' });
    setManifestHeaders(res, mediaType, digest, size);
    if (head) {
      res.end();
      return;
    }
    metrics.bytes.inc({ source: 'local' }, size);
    res.end(body);
  }

  /** A manifest this node lacks: a HEAD by tag answers from the peer's (or upstream's) descriptor, anything else fetches and checks the bytes, from peers, else upstream. */
  async function sendPeerManifest(
    res: ServerResponse,
    head: boolean,
    digest: Digest,
    resolved: Resolved | undefined,
    route: Route & { kind: 'manifest' },
    { peers, signal, upstream }: Remote,
    unknown: () => RegistryError,
  ): Promise<void> {
    let mediaType: string;
    let body: Buffer | undefined;
    let size: number;
    let source: 'peer' | 'upstream';
    if (head && resolved !== undefined && resolved.from !== 'local') {
      ({ mediaType, size } = resolved.descriptor);
      source = resolved.from;
    } else {
      source = 'peer';
      let manifest = await peers.fetchManifest(route.name, digest, signal);
      if (manifest === undefined && upstream !== undefined) {
        source = 'upstream';
        manifest = await upstream.fallback.fetchManifest(upstream.registry, route.name, digest, signal);
      }
      if (manifest === undefined) throw unknown();
      ({ mediaType, bytes: body } = manifest);
      size = body.length;
    }
    metrics.requests.inc({ source, kind: 'manifest' });
    setManifestHeaders(res, mediaType, digest, size);
    if (head) {
      res.end();
      return;
    }
    metrics.bytes.inc({ source }, size);
    res.end(body);
  }

  async function sendBlob(req: IncomingMessage, res: ServerResponse, head: boolean, route: Route & { kind: 'blob' }, remote: Remote | undefined): Promise<void> {
    const digest = route.digest;
    const size = await store.size(digest);
    if (size === undefined && remote !== undefined) {
      if (await sendPeerBlob(req, res, head, route, remote)) return;
      if (remote.upstream !== undefined) {
        const { fallback, registry } = remote.upstream;
        await sendSpooledBlob(req, res, head, digest, () => fallback.blob(registry, route.name, digest, false, remote.signal), false);
        return;
      }
    }
    if (size === undefined) {
      metrics.requests.inc({ source: 'miss', kind: 'blob' });
      throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to this node', { digest: digest.text });
    }
    const { slice, length } = setBlobHeaders(req, res, digest, size);
    metrics.requests.inc({ source: 'local', kind: 'blob' });
    if (head || length === 0) {
      // An empty body cannot be held back: check the (empty) content before answering.
      if (!head) await readAll(store, digest, size);
      res.end();
      return;
    }
    try {
      await streamToResponse(res, store.read(digest, size, slice));
      metrics.bytes.inc({ source: 'local' }, length);
    } catch (err) {
      if (!(err instanceof ContentMismatchError)) {
        if (!res.destroyed) logger.warn('blob response failed', { digest: digest.text, error: err as Error });
        res.destroy();
        return;
      }
      metrics.corrupt.inc({ source: 'local' });
      logger.error('stored blob does not match its digest; not served', { digest: digest.text, error: err, sent: res.headersSent });
      // Nothing sent yet: a 404 sends containerd to its next host. Else cut the body short.
      if (!res.headersSent) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to this node', { digest: digest.text });
      res.destroy();
    }
  }

  /** Wrong bytes (from `source`) went to this node's containerd: drop what it kept of them before it resumes elsewhere. */
  async function discardPartial(digest: Digest, source: 'peers' | 'upstream'): Promise<void> {
    try {
      const dropped = (await store.discardPartial?.(digest)) ?? 0;
      logger.warn(`wrong bytes from ${source} were sent; dropped the unfinished download`, { digest: digest.text, dropped });
    } catch (err) {
      logger.error('could not drop the unfinished download of wrong bytes', { digest: digest.text, error: err as Error });
    }
  }

  /**
   * A blob this node lacks, streamed from peers as it arrives. Until the first
   * byte goes out a failure is still a 404 (containerd goes to its next host);
   * after it, the response is cut short. Whether peers answered (false:
   * nothing sent yet, and no peer had it whole).
   */
  async function sendPeerBlob(req: IncomingMessage, res: ServerResponse, head: boolean, route: Route & { kind: 'blob' }, { peers, signal, upstream }: Remote): Promise<boolean> {
    const digest = route.digest;
    const unknown = () => {
      metrics.requests.inc({ source: 'miss', kind: 'blob' });
      return new RegistryError('BLOB_UNKNOWN', 'blob unknown to this node', { digest: digest.text });
    };
    if (head) {
      const size = await peers.blobSize(route.name, digest, signal);
      if (size === undefined && upstream !== undefined) return false;
      if (size === undefined) throw unknown();
      setBlobHeaders(req, res, digest, size);
      metrics.requests.inc({ source: 'peer', kind: 'blob' });
      res.end();
      return true;
    }
    const blob = await peers.openBlob(route.name, digest, signal);
    if (blob === undefined && upstream !== undefined) return false;
    if (blob === undefined) throw unknown();
    let slice: ByteRange | undefined;
    let length: number;
    try {
      ({ slice, length } = setBlobHeaders(req, res, digest, blob.size));
    } catch (err) {
      blob.close();
      throw err;
    }
    try {
      await streamToResponse(res, blob.read(slice));
    } catch (err) {
      // The PeerSource has logged and counted wrong bytes; a client gone needs no word.
      if (!res.destroyed && !(err instanceof ContentMismatchError)) logger.warn('blob from peers failed', { digest: digest.text, error: err as Error, sent: res.headersSent });
      if (!res.headersSent && !res.destroyed) {
        for (const name of BLOB_HEADERS) res.removeHeader(name);
        if (upstream !== undefined) return false;
        throw unknown();
      }
      metrics.requests.inc({ source: 'peer', kind: 'blob' });
      if (err instanceof ContentMismatchError) await discardPartial(digest, 'peers');
      res.destroy();
      return true;
    }
    metrics.requests.inc({ source: 'peer', kind: 'blob' });
    metrics.bytes.inc({ source: 'peer' }, length);
    return true;
  }

  /**
   * Another node's request for a blob. One that asks this node, as the blob's
   * downloader, to fetch it from upstream is answered from the spool, where it
   * may still be downloading (and is started if need be); anything else from
   * the store.
   */
  async function sendBlobToPeer(
    req: IncomingMessage,
    res: ServerResponse,
    head: boolean,
    route: Route & { kind: 'blob' },
    fallback: UpstreamFallback,
    registry: string | undefined,
    signal: AbortSignal,
  ): Promise<void> {
    const digest = route.digest;
    // Without the header a peer asks for what this node advertises: its store only.
    if (registry === undefined || req.headers[UPSTREAM_FETCH_HEADER.toLowerCase()] === undefined || (await store.size(digest)) !== undefined) {
      await sendBlob(req, res, head, route, undefined);
      return;
    }
    await sendSpooledBlob(req, res, head, digest, () => fallback.blob(registry, route.name, digest, true, signal), true);
  }

  /**
   * A blob from this node's spool, read as it downloads, or relayed from the
   * node downloading it; the last byte only once the whole blob has matched
   * its digest. Until the first byte goes out a failure is a 404 (containerd
   * goes to its next host); after it, the response is cut short.
   */
  async function sendSpooledBlob(
    req: IncomingMessage,
    res: ServerResponse,
    head: boolean,
    digest: Digest,
    entryOf: () => Promise<FallbackBlob | undefined>,
    toPeer: boolean,
  ): Promise<void> {
    const unknown = () => {
      metrics.requests.inc({ source: 'miss', kind: 'blob' });
      return new RegistryError('BLOB_UNKNOWN', 'blob unknown to this node', { digest: digest.text });
    };
    let entry = await entryOf();
    if (entry === undefined) throw unknown();
    let slice: ByteRange | undefined;
    let length: number;
    try {
      ({ slice, length } = setBlobHeaders(req, res, digest, entry.size));
    } catch (err) {
      entry.release();
      throw err;
    }
    if (head) {
      entry.release();
      metrics.requests.inc({ source: 'upstream', kind: 'blob' });
      res.end();
      return;
    }
    let reader;
    try {
      reader = entry.reader(slice);
    } catch (err) {
      // Complete and just removed: a second look starts (or joins) a new download.
      if (!(err instanceof SpoolEntryGoneError)) throw err;
      entry = await entryOf();
      if (entry === undefined) throw unknown();
      reader = entry.reader(slice);
    }
    const partial = entry;
    async function* counted(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
      for await (const chunk of chunks) {
        if (toPeer && partial.partial) metrics.spoolPartialPeerBytes.inc(chunk.length);
        yield chunk;
      }
    }
    try {
      await streamToResponse(res, counted(reader));
    } catch (err) {
      if (!res.destroyed && !(err instanceof ContentMismatchError)) logger.warn('blob from upstream failed', { digest: digest.text, error: err as Error, sent: res.headersSent });
      if (err instanceof ContentMismatchError) metrics.corrupt.inc({ source: 'upstream' });
      if (!res.headersSent && !res.destroyed) {
        for (const name of BLOB_HEADERS) res.removeHeader(name);
        throw unknown();
      }
      metrics.requests.inc({ source: 'upstream', kind: 'blob' });
      // Sent to a peer, the wrong bytes are in that node's containerd, which its own mirror clears.
      if (err instanceof ContentMismatchError && !toPeer) await discardPartial(digest, 'upstream');
      res.destroy();
      return;
    } finally {
      reader.close();
    }
    metrics.requests.inc({ source: 'upstream', kind: 'blob' });
    metrics.bytes.inc({ source: 'upstream' }, length);
  }

  return (req, res) => {
    const started = process.hrtime.bigint();
    let route: Route | undefined;
    const gone = new AbortController();
    res.once('close', () => {
      gone.abort();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.httpDuration.observe({ route: route?.kind ?? 'invalid', method: req.method ?? '', code: res.statusCode }, seconds);
    });
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    const serve = async () => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        throw new RegistryError('UNSUPPORTED', `${req.method} is not supported: this mirror serves pulls only`);
      }
      route = parseRoute(req.url ?? '/');
      await handle(req, res, route, gone.signal);
    };
    serve().catch((err: unknown) => {
      // The client left while peers were asked: nobody to answer, nothing to report.
      if (gone.signal.aborted && err instanceof Error && err.name === 'AbortError') return;
      sendError(res, asRegistryError(err, route, logger));
    });
  };
}

/**
 * Unexpected failures (containerd down, say) become the route's 404, without
 * internals: containerd moves on to the next host only on a 404.
 */
function asRegistryError(err: unknown, route: Route | undefined, logger: Logger): RegistryError {
  if (err instanceof RegistryError) return err;
  logger.error('registry request failed', { error: err as Error, route: route?.kind });
  const message = 'the node content store is unavailable';
  return new RegistryError(route?.kind === 'blob' ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN', message, undefined, 404);
}

function sendError(res: ServerResponse, error: RegistryError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = error.body();
  res.statusCode = error.status;
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function setManifestHeaders(res: ServerResponse, mediaType: string, digest: Digest, size: number): void {
  res.setHeader('Content-Type', mediaType);
  res.setHeader('Docker-Content-Digest', digest.text);
  res.setHeader('ETag', `"${digest.text}"`);
  res.setHeader('Content-Length', size);
}

const BLOB_HEADERS = ['Content-Type', 'Docker-Content-Digest', 'ETag', 'Accept-Ranges', 'Content-Range', 'Content-Length'] as const;

/** Status and headers for a blob of `size`, with the request's Range applied; throws 416 for a range past the end. */
function setBlobHeaders(req: IncomingMessage, res: ServerResponse, digest: Digest, size: number): { slice: ByteRange | undefined; length: number } {
  const range = parseRange(req.headers.range, size);
  if (range.kind === 'unsatisfiable') {
    res.setHeader('Content-Range', `bytes */${size}`);
    throw new RegistryError('UNSUPPORTED', 'range not satisfiable', { size }, 416);
  }
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('Docker-Content-Digest', digest.text);
  res.setHeader('ETag', `"${digest.text}"`);
  res.setHeader('Accept-Ranges', 'bytes');
  const slice = range.kind === 'range' ? range.range : undefined;
  if (slice !== undefined) {
    res.statusCode = 206;
    res.setHeader('Content-Range', `bytes ${slice.start}-${slice.end}/${size}`);
  }
  const length = slice === undefined ? size : slice.end - slice.start + 1;
  res.setHeader('Content-Length', length);
  return { slice, length };
}

function referenceText(route: Route & { kind: 'manifest' }): string {
  return route.reference.kind === 'tag' ? route.reference.tag : route.reference.digest.text;
}
