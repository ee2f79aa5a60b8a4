/**
 * Tag → digest for the webhook. Auto: cache, then peers (fast, no registry
 * traffic, works while upstream is down), then upstream; mutable tags go
 * upstream before peers, since a peer may hold an older image under the same
 * tag. `upstream` mode never takes a peer's or the cache's answer.
 */
import { createHash } from 'node:crypto';
import type { ManifestDescriptor, RegistryCredentials } from '../../shared/distribution/types.ts';
import { UpstreamError } from '../../shared/distribution/types.ts';
import { effectiveTag, type ImageRef } from '../../shared/image-ref.ts';
import type { Logger } from '../../shared/log.ts';
import { TagCache } from './tag-cache.ts';
import { ResolveError, type ImageResolver, type Resolution, type ResolveContext } from './types.ts';

/** Tags as other nodes' mirrors hold them (PeerSource). */
export interface PeerTags {
  resolveTag(registry: string, name: string, tag: string, signal: AbortSignal): Promise<ManifestDescriptor | undefined>;
}

/** Tags as the registry holds them (UpstreamClient). */
export interface UpstreamTags {
  resolve(ref: ImageRef, credentials: readonly RegistryCredentials[], signal: AbortSignal): Promise<ManifestDescriptor>;
}

export interface ResolverInit {
  /** Undefined: no peer network configured. */
  peers: PeerTags | undefined;
  upstream: UpstreamTags;
  /** Tags that move (--mutable-tags); an image without a tag is mutable too. Default /^latest$/. */
  mutableTags?: RegExp;
  cache?: TagCache;
  logger: Logger;
}

type Step = 'peers' | 'upstream';

export class Resolver implements ImageResolver {
  readonly #peers: PeerTags | undefined;
  readonly #upstream: UpstreamTags;
  readonly #mutable: RegExp;
  readonly #cache: TagCache;
  readonly #logger: Logger;

  constructor(init: ResolverInit) {
    this.#peers = init.peers;
    this.#upstream = init.upstream;
    this.#mutable = init.mutableTags ?? /^latest$/;
    this.#cache = init.cache ?? new TagCache();
    this.#logger = init.logger;
  }

  async resolve(ref: ImageRef, context: ResolveContext): Promise<Resolution> {
    const tag = effectiveTag(ref);
    const key = `${ref.registry}/${ref.repository}:${tag}`;
    if (context.mode !== 'upstream') {
      const cached = this.#cache.get(key);
      if (cached !== undefined) return { digest: cached, by: 'cache' };
    }
    const mutable = ref.tag === undefined || this.#mutable.test(tag);
    const steps: Step[] = context.mode === 'upstream' ? ['upstream'] : context.mode === 'peers' ? ['peers'] : mutable ? ['upstream', 'peers'] : ['peers', 'upstream'];
    // Identical concurrent lookups share one flight; credentials are part of an upstream answer's identity.
    const flight = `${key} ${steps.join(',')} ${credentialsId(context.credentials)}`;
    return this.#cache.once(flight, async () => {
      const failures: string[] = [];
      for (const step of steps) {
        const found = step === 'peers' ? await this.#fromPeers(ref, tag, context, failures) : await this.#fromUpstream(ref, context, failures);
        if (found !== undefined) {
          this.#cache.set(key, found.digest);
          return { digest: found.digest, by: step === 'peers' ? 'peer' : 'upstream' };
        }
        if (context.signal.aborted) break;
      }
      throw new ResolveError(context.signal.aborted ? `timed out resolving ${key} (${failures.join('; ') || 'no answer yet'})` : `cannot resolve ${key}: ${failures.join('; ')}`);
    });
  }

  async #fromPeers(ref: ImageRef, tag: string, context: ResolveContext, failures: string[]): Promise<ManifestDescriptor | undefined> {
    if (this.#peers === undefined) {
      failures.push('no peer network');
      return undefined;
    }
    try {
      const found = await this.#peers.resolveTag(ref.registry, ref.repository, tag, context.signal);
      if (found === undefined) failures.push('no peer has it');
      return found;
    } catch (err) {
      this.#logger.debug('peer resolution failed', { ref: ref.original, error: err as Error });
      failures.push('peers failed');
      return undefined;
    }
  }

  async #fromUpstream(ref: ImageRef, context: ResolveContext, failures: string[]): Promise<ManifestDescriptor | undefined> {
    try {
      return await this.#upstream.resolve(ref, context.credentials, context.signal);
    } catch (err) {
      failures.push(err instanceof UpstreamError ? `upstream ${err.failure}${err.status === undefined ? '' : ` (${err.status})`}` : `upstream failed: ${(err as Error).message}`);
      return undefined;
    }
  }
}

/** Which credentials, as a hash: flight keys must not hold secrets in the clear. */
function credentialsId(credentials: readonly RegistryCredentials[]): string {
  if (credentials.length === 0) return 'anonymous';
  return createHash('sha256').update(JSON.stringify(credentials)).digest('hex').slice(0, 16);
}
