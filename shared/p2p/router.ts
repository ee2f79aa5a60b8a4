/**
 * How the mirror and the webhook find content on other nodes. The libp2p DHT
 * implements it for real; MemoryRouter implements it for tests of its users.
 */

/** A peer that holds a key, and where its mirror can be reached. */
export interface Provider {
  /** libp2p peer id, as a string. */
  readonly peerId: string;
  /** The peer's IP address (from its multiaddrs); its mirror listens there on the peer registry port. */
  readonly host: string;
}

export interface LookupOptions {
  /** Stop after this many distinct providers. */
  readonly count: number;
  /** Always set: a lookup waits for a routing table that may never fill. */
  readonly signal: AbortSignal;
}

export interface Router {
  /**
   * Providers of `key` other than this node, as they are found. Ends after
   * `count` providers, when the signal aborts (no error: the iteration just
   * ends), or when the network has no more.
   */
  lookup(key: string, options: LookupOptions): AsyncIterable<Provider>;
  /** Provide these keys from now on, re-providing before the records expire, until withdrawn. */
  advertise(keys: Iterable<string>): void;
  /** Stop providing these keys: no more re-provides, so the records lapse within their TTL. */
  withdraw(keys: Iterable<string>): void;
  /** Keys provided now. */
  advertised(): ReadonlySet<string>;
  /** Whether this node is part of the network (drives /readyz). */
  ready(): boolean;
  close(): Promise<void>;
}

/** The peers this node is connected to now, for choices every node must make alike (rendezvous hashing). */
export interface LivePeers {
  /** Connected mirrors (not DHT clients), this node excluded. */
  livePeers(): Promise<Provider[]>;
}
