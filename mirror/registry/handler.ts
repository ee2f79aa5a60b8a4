/**
 * The pull side of the OCI distribution API over the node's content store.
 * Every byte sent is checked against its digest; a mismatch aborts the
 * response (blobs) or turns into a 404 (manifests, which are checked whole
 * before anything is sent), so the client moves on and never keeps bad bytes.
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
import { RegistryError } from './errors.ts';
import { parseRange } from './range.ts';
import { parseRoute, type Route } from './route.ts';

export interface RegistryHandlerInit {
  store: ContentStore;
  /** Registries whose tags are served; empty: every registry. */
  mirroredRegistries: readonly MirroredRegistry[];
  logger: Logger;
  metrics: MirrorMetrics;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

// A `?ns=` value: host[:port], as containerd sends it.
const NS_RE = /^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$/;

export function createRegistryHandler(init: RegistryHandlerInit): Handler {
  const { store, logger, metrics } = init;
  const mirrored = new Set(init.mirroredRegistries.map((r) => r.host));

  async function handle(req: IncomingMessage, res: ServerResponse, route: Route): Promise<void> {
    const head = req.method === 'HEAD';
    switch (route.kind) {
      case 'base':
        res.setHeader('Content-Type', 'application/json');
        res.setHeader('Content-Length', 2);
        res.end(head ? undefined : '{}');
        return;
      case 'manifest': {
        const descriptor = route.reference.kind === 'tag' ? await resolveTag(route.name, route.reference.tag, route.namespace) : undefined;
        const digest = route.reference.kind === 'digest' ? route.reference.digest : descriptor?.digest;
        if (digest === undefined) {
          metrics.requests.inc({ source: 'miss', kind: 'manifest' });
          throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: route.name, reference: referenceText(route) });
        }
        await sendManifest(res, head, digest, descriptor, route);
        return;
      }
      case 'blob':
        await sendBlob(req, res, head, route.digest);
        return;
    }
  }

  async function resolveTag(name: string, tag: string, namespace: string | undefined): Promise<Descriptor | undefined> {
    // Without ?ns= a tag cannot be placed in a registry.
    if (namespace === undefined || !NS_RE.test(namespace)) return undefined;
    if (mirrored.size > 0 && !mirrored.has(namespace)) return undefined;
    return store.resolveTag({ registry: namespace, name: canonicalRepository(namespace, name), tag });
  }

  async function sendManifest(res: ServerResponse, head: boolean, digest: Digest, known: Descriptor | undefined, route: Route & { kind: 'manifest' }): Promise<void> {
    const unknown = () => {
      metrics.requests.inc({ source: 'miss', kind: 'manifest' });
      return new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to this node', { name: route.name, reference: referenceText(route) });
    };
    const size = await store.size(digest);
    if (size === undefined || size > MAX_MANIFEST_BYTES) throw unknown();
    let mediaType = known?.mediaType;
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
    res.setHeader('Content-Type', mediaType);
    res.setHeader('Docker-Content-Digest', digest.text);
    res.setHeader('ETag', `"${digest.text}"`);
    res.setHeader('Content-Length', size);
    if (head) {
      res.end();
      return;
    }
    metrics.bytes.inc({ source: 'local' }, size);
    res.end(body);
  }

  async function sendBlob(req: IncomingMessage, res: ServerResponse, head: boolean, digest: Digest): Promise<void> {
    const size = await store.size(digest);
    if (size === undefined) {
      metrics.requests.inc({ source: 'miss', kind: 'blob' });
      throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to this node', { digest: digest.text });
    }
    const range = parseRange(req.headers.range, size);
    if (range.kind === 'unsatisfiable') {
      res.setHeader('Content-Range', `bytes */${size}`);
      throw new RegistryError('UNSUPPORTED', 'range not satisfiable', { size }, 416);
    }
    metrics.requests.inc({ source: 'local', kind: 'blob' });
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

  return (req, res) => {
    const started = process.hrtime.bigint();
    let route: Route | undefined;
    res.once('close', () => {
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
      await handle(req, res, route);
    };
    serve().catch((err: unknown) => sendError(res, asRegistryError(err, route, logger)));
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

function referenceText(route: Route & { kind: 'manifest' }): string {
  return route.reference.kind === 'tag' ? route.reference.tag : route.reference.digest.text;
}
