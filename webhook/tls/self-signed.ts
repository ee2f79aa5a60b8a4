/**
 * A CA of the webhook's own and a serving certificate it signs, for running
 * without cert-manager: the API server trusts the CA through the
 * MutatingWebhookConfiguration's caBundle and checks the serving certificate's
 * DNS names against the Service it calls (Go's verifier reads SANs only, never
 * the common name). node-forge builds the certificates; its RSA key generation
 * uses Node's native crypto.
 */
import { randomBytes } from 'node:crypto';
import forge from 'node-forge';
import type { Logger } from '../../shared/log.ts';
import type { KeyPair, TlsSource } from './tls-source.ts';

const DAY_MS = 24 * 60 * 60 * 1000;
/** Clocks in a cluster disagree a little: certificates start a few minutes in the past. */
const BACKDATE_MS = 5 * 60 * 1000;

export interface CertificateAuthority {
  readonly certPem: string;
  readonly keyPem: string;
  readonly notAfter: Date;
}

export interface ServingCertificate extends KeyPair {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** The names the API server may use for the Service: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`. */
export function serviceDnsNames(service: string, namespace: string): string[] {
  return [service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];
}

export interface CertificateAuthorityInit {
  /** Default `shoal-webhook-ca`. */
  commonName?: string;
  /** Default 3650 (ten years: the CA outlives any pod that made it). */
  validityDays?: number;
  /** Default now. */
  now?: Date;
}

export function createCertificateAuthority(init: CertificateAuthorityInit = {}): CertificateAuthority {
  const keys = forge.pki.rsa.generateKeyPair({ bits: 2048 });
  const cert = forge.pki.createCertificate();
  const subject = [
    { name: 'commonName', value: init.commonName ?? 'shoal-webhook-ca' },
    { name: 'organizationName', value: 'shoal' },
  ];
  fillValidity(cert, init.now ?? new Date(), init.validityDays ?? 3650);
  cert.publicKey = keys.publicKey;
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: forge.pki.privateKeyToPem(keys.privateKey), notAfter: cert.validity.notAfter };
}

export interface ServingCertificateInit {
  /** The first also becomes the subject's common name. */
  dnsNames: readonly string[];
  /** IP addresses the certificate also names (a server reached by address). Default none. */
  ipAddresses?: readonly string[];
  /** Default 365. */
  validityDays?: number;
  /** Default now. */
  now?: Date;
}

export function issueServingCertificate(ca: CertificateAuthority, init: ServingCertificateInit): ServingCertificate {
  if (init.dnsNames.length === 0) throw new Error('a serving certificate needs at least one DNS name');
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem);
  const keys = forge.pki.rsa.generateKeyPair({ bits: 2048 });
  const cert = forge.pki.createCertificate();
  fillValidity(cert, init.now ?? new Date(), init.validityDays ?? 365);
  cert.publicKey = keys.publicKey;
  cert.setSubject([{ name: 'commonName', value: init.dnsNames[0]! }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [...init.dnsNames.map((value) => ({ type: 2, value })), ...(init.ipAddresses ?? []).map((ip) => ({ type: 7, ip }))] },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return {
    cert: forge.pki.certificateToPem(cert),
    key: forge.pki.privateKeyToPem(keys.privateKey),
    notBefore: cert.validity.notBefore,
    notAfter: cert.validity.notAfter,
  };
}

function fillValidity(cert: forge.pki.Certificate, now: Date, days: number): void {
  // 16 random bytes (RFC 5280: positive, at most 20 octets). The first byte in 0x40-0x7f keeps the
  // DER integer positive and minimal: Go refuses a serial with a superfluous leading zero byte.
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x3f) | 0x40;
  cert.serialNumber = serial.toString('hex');
  cert.validity.notBefore = new Date(now.getTime() - BACKDATE_MS);
  cert.validity.notAfter = new Date(now.getTime() + days * DAY_MS);
}

export interface SelfSignedTlsInit {
  /** The Service's names (serviceDnsNames). */
  dnsNames: readonly string[];
  logger: Logger;
  /** Life of each serving certificate, in days; a new one is issued after two thirds of it. Default 365. */
  servingValidityDays?: number;
  /** How often renewal is considered, in ms. Default one hour. */
  renewCheckMs?: number;
}

/**
 * A CA made at start, kept in memory, and a serving certificate it signs,
 * renewed from the same CA before it expires (the caBundle stays valid). Each
 * process makes its own CA: with several replicas, their caBundles must be
 * merged or one CA shared (cert-manager and --tls-cert-file are the usual answer).
 */
export class SelfSignedTls implements TlsSource {
  readonly ca: CertificateAuthority;
  readonly #init: SelfSignedTlsInit;
  readonly #listeners: ((pair: KeyPair) => void)[] = [];
  readonly #timer: NodeJS.Timeout;
  #serving: ServingCertificate;

  constructor(init: SelfSignedTlsInit) {
    this.#init = init;
    this.ca = createCertificateAuthority();
    this.#serving = this.#issue();
    this.#timer = setInterval(() => this.#renewIfDue(), init.renewCheckMs ?? 60 * 60 * 1000);
    this.#timer.unref();
  }

  get current(): ServingCertificate {
    return this.#serving;
  }

  onRotate(listener: (pair: KeyPair) => void): void {
    this.#listeners.push(listener);
  }

  close(): void {
    clearInterval(this.#timer);
  }

  #issue(): ServingCertificate {
    return issueServingCertificate(this.ca, { dnsNames: this.#init.dnsNames, validityDays: this.#init.servingValidityDays });
  }

  #renewIfDue(): void {
    const { notBefore, notAfter } = this.#serving;
    const due = notBefore.getTime() + ((notAfter.getTime() - notBefore.getTime()) * 2) / 3;
    if (Date.now() < due) return;
    this.#serving = this.#issue();
    this.#init.logger.info('serving certificate renewed', { notAfter: this.#serving.notAfter.toISOString() });
    for (const listener of this.#listeners) listener(this.#serving);
  }
}
