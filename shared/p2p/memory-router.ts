/**
 * Routers that share one in-memory table: several "nodes" in one process see
 * each other's advertisements at once. For tests of the router's users; the
 * DHT's own behaviour is tested against real libp2p nodes.
 */
import type { LivePeers, LookupOptions, Provider, Router } from './router.ts';

export class MemoryNetwork {
  readonly #providers = new Map<string, Map<string, Provider>>();
  readonly #members = new Map<string, Provider>();

  /** A router for one node of this network. */
  join(self: Provider): MemoryRouter {
    this.#members.set(self.peerId, self);
    return new MemoryRouter(this, self);
  }

  /** @internal */
  leave(peerId: string): void {
    this.#members.delete(peerId);
  }

  /** @internal */
  members(): Provider[] {
    return [...this.#members.values()];
  }

  /** @internal */
  add(key: string, provider: Provider): void {
    let byPeer = this.#providers.get(key);
    if (byPeer === undefined) this.#providers.set(key, (byPeer = new Map<string, Provider>()));
    byPeer.set(provider.peerId, provider);
  }

  /** @internal */
  remove(key: string, peerId: string): void {
    this.#providers.get(key)?.delete(peerId);
  }

  /** @internal */
  providers(key: string): Provider[] {
    return [...(this.#providers.get(key)?.values() ?? [])];
  }
}

export class MemoryRouter implements Router, LivePeers {
  readonly #network: MemoryNetwork;
  readonly #self: Provider;
  readonly #keys = new Set<string>();
  /** Providers to put first, for tests that need an order (e.g. a bad peer before a good one). */
  order: ((providers: Provider[]) => Provider[]) | undefined;

  constructor(network: MemoryNetwork, self: Provider) {
    this.#network = network;
    this.#self = self;
  }

  async *lookup(key: string, options: LookupOptions): AsyncGenerator<Provider> {
    let found = this.#network.providers(key).filter((p) => p.peerId !== this.#self.peerId);
    if (this.order) found = this.order(found);
    let yielded = 0;
    for (const provider of found) {
      await Promise.resolve();
      if (options.signal.aborted || yielded >= options.count) return;
      yielded++;
      yield provider;
    }
  }

  advertise(keys: Iterable<string>): void {
    for (const key of keys) {
      this.#keys.add(key);
      this.#network.add(key, this.#self);
    }
  }

  withdraw(keys: Iterable<string>): void {
    for (const key of keys) {
      this.#keys.delete(key);
      this.#network.remove(key, this.#self.peerId);
    }
  }

  advertised(): ReadonlySet<string> {
    return this.#keys;
  }

  ready(): boolean {
    return true;
  }

  livePeers(): Promise<Provider[]> {
    return Promise.resolve(this.#network.members().filter((p) => p.peerId !== this.#self.peerId));
  }

  close(): Promise<void> {
    this.#network.leave(this.#self.peerId);
    this.withdraw([...this.#keys]);
    return Promise.resolve();
  }
}
