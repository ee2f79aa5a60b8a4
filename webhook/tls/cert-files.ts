/**
 * A serving certificate from files (a cert-manager Secret mounted as a volume),
 * read again when they change. The kubelet swaps a Secret volume's contents
 * atomically by renaming a `..data` symlink in the directory, so the parent
 * directories are watched rather than the files; a periodic re-read covers
 * file systems where watching does not work. A half-written rotation (new
 * certificate, old key) does not load and is retried: the old pair stays in
 * service until a consistent one is there.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { dirname } from 'node:path';
import { createSecureContext } from 'node:tls';
import type { Logger } from '../../shared/log.ts';
import type { KeyPair, TlsSource } from './tls-source.ts';

export interface CertFilesInit {
  /** PEM certificate, the chain after it (tls.crt). */
  certFile: string;
  /** PEM private key (tls.key). */
  keyFile: string;
  /** How often the files are read again regardless of change events, in ms. Default 60000. */
  reloadIntervalMs?: number;
  logger: Logger;
}

/** Files that cannot serve TLS at start: the message says which and why. */
export class CertFilesError extends Error {
  override name = 'CertFilesError';
}

/** Events come in bursts during a Secret update; one read after they settle. */
const SETTLE_MS = 100;

export class CertFiles implements TlsSource {
  readonly #init: CertFilesInit;
  readonly #listeners: ((pair: KeyPair) => void)[] = [];
  readonly #watchers: FSWatcher[] = [];
  readonly #timer: NodeJS.Timeout;
  #current: KeyPair;
  #settle: NodeJS.Timeout | undefined;
  #reading: Promise<void> | undefined;
  #again = false;
  #closed = false;
  /** The last unusable pair, so a broken rotation is logged once, not at every read. */
  #lastRefused = '';

  /** Reads and checks the files; throws CertFilesError when they cannot serve. */
  static async open(init: CertFilesInit): Promise<CertFiles> {
    let pair: KeyPair;
    try {
      pair = await readPair(init);
    } catch (err) {
      throw new CertFilesError(`cannot read the TLS files: ${(err as Error).message}`);
    }
    const problem = checkPair(pair);
    if (problem !== undefined) throw new CertFilesError(`${init.certFile} and ${init.keyFile} cannot serve TLS: ${problem}`);
    return new CertFiles(init, pair);
  }

  private constructor(init: CertFilesInit, pair: KeyPair) {
    this.#init = init;
    this.#current = pair;
    for (const dir of new Set([dirname(init.certFile), dirname(init.keyFile)])) {
      try {
        const watcher = watch(dir, { persistent: false }, () => this.#soon());
        watcher.on('error', (err) => init.logger.debug('certificate directory watch failed; re-reading on the interval', { dir, error: err }));
        this.#watchers.push(watcher);
      } catch (err) {
        init.logger.debug('certificate directory not watched; re-reading on the interval', { dir, error: err as Error });
      }
    }
    this.#timer = setInterval(() => void this.reload(), init.reloadIntervalMs ?? 60_000);
    this.#timer.unref();
    init.logger.info('serving certificate loaded', describePair(pair));
  }

  get current(): KeyPair {
    return this.#current;
  }

  onRotate(listener: (pair: KeyPair) => void): void {
    this.#listeners.push(listener);
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#settle);
    for (const watcher of this.#watchers) watcher.close();
  }

  /** Reads the files now; a changed, consistent pair replaces the current one. */
  reload(): Promise<void> {
    if (this.#reading !== undefined) {
      this.#again = true;
      return this.#reading;
    }
    this.#reading = this.#read().finally(() => {
      this.#reading = undefined;
      if (this.#again && !this.#closed) {
        this.#again = false;
        void this.reload();
      }
    });
    return this.#reading;
  }

  #soon(): void {
    if (this.#closed) return;
    clearTimeout(this.#settle);
    this.#settle = setTimeout(() => void this.reload(), SETTLE_MS);
    this.#settle.unref();
  }

  async #read(): Promise<void> {
    let pair: KeyPair;
    try {
      pair = await readPair(this.#init);
    } catch (err) {
      // Mid-rotation a file can be missing for a moment.
      this.#refuse('', `cannot read the TLS files: ${(err as Error).message}`);
      return;
    }
    if (this.#closed || (pair.cert === this.#current.cert && pair.key === this.#current.key)) return;
    const problem = checkPair(pair);
    if (problem !== undefined) {
      this.#refuse(pair.cert + pair.key, problem);
      return;
    }
    this.#lastRefused = '';
    this.#current = pair;
    this.#init.logger.info('serving certificate reloaded', describePair(pair));
    for (const listener of this.#listeners) listener(pair);
  }

  #refuse(identity: string, problem: string): void {
    if (identity !== '' && identity === this.#lastRefused) return;
    this.#lastRefused = identity;
    this.#init.logger.warn('new TLS files not used yet; still serving the previous certificate', { certFile: this.#init.certFile, keyFile: this.#init.keyFile, problem });
  }
}

async function readPair(init: CertFilesInit): Promise<KeyPair> {
  const [cert, key] = await Promise.all([readFile(init.certFile, 'utf8'), readFile(init.keyFile, 'utf8')]);
  return { cert, key };
}

/** Why the pair cannot serve (unparsable, key not matching the certificate), or undefined. */
function checkPair(pair: KeyPair): string | undefined {
  try {
    new X509Certificate(pair.cert);
    createSecureContext({ cert: pair.cert, key: pair.key });
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

function describePair(pair: KeyPair): Record<string, string> {
  const cert = new X509Certificate(pair.cert);
  return { subject: cert.subject.replaceAll('\n', ', '), subjectAltName: cert.subjectAltName ?? '', notAfter: cert.validTo, fingerprint256: cert.fingerprint256 };
}
