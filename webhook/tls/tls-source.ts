/** Where the serving certificate comes from: files (cert-manager) or the webhook's own CA. */

/** A PEM certificate (chain) and its PEM private key. */
export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

export interface TlsSource {
  /** The pair to serve now. */
  readonly current: KeyPair;
  /** Called with every new pair; connections already open keep the one they started with. */
  onRotate(listener: (pair: KeyPair) => void): void;
  /** Stops watching and renewing. */
  close(): void;
}
