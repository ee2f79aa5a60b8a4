/**
 * --tls-cert-file/--tls-key-file reloading, against the layout the kubelet gives
 * a mounted Secret (files are symlinks through `..data`, swapped by a rename).
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { createLogger, silentLogger } from '../../shared/log.ts';
import { createWebhook, type RunningWebhook } from '../server.ts';
import { createReview, FakeResolver, pod, SERVICE_HOST } from '../testing.ts';
import { CertFiles, CertFilesError } from './cert-files.ts';
import { createCertificateAuthority, issueServingCertificate, serviceDnsNames, type ServingCertificate } from './self-signed.ts';

const RELOAD_MS = 500;

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** The fingerprint of the certificate a new TLS connection gets. */
function newConnectionSees(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, servername: SERVICE_HOST }, () => {
      const cert = socket.getPeerX509Certificate();
      socket.end();
      resolve(cert?.fingerprint256 ?? '');
    });
    socket.on('error', reject);
  });
}

/** A Secret volume as the kubelet writes it: <dir>/..<version>/, <dir>/..data → it, tls.crt and tls.key → ..data/. */
class SecretVolume {
  readonly dir: string;
  #version = 0;
  #current: string | undefined;
  constructor(dir: string) {
    this.dir = dir;
  }
  get certFile(): string {
    return join(this.dir, 'tls.crt');
  }
  get keyFile(): string {
    return join(this.dir, 'tls.key');
  }
  async write(pair: { cert: string; key: string }): Promise<void> {
    const version = `..2026_11_22_${++this.#version}`;
    await mkdir(join(this.dir, version));
    await writeFile(join(this.dir, version, 'tls.crt'), pair.cert);
    await writeFile(join(this.dir, version, 'tls.key'), pair.key);
    await symlink(version, join(this.dir, '..data_tmp'));
    await rename(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    if (this.#current === undefined) {
      await symlink('..data/tls.crt', this.certFile);
      await symlink('..data/tls.key', this.keyFile);
    } else {
      await rm(join(this.dir, this.#current), { recursive: true });
    }
    this.#current = version;
  }
}

describe('certificate files', function () {
  this.timeout(30_000);
  const ca = createCertificateAuthority();
  const names = serviceDnsNames('shoal-webhook', 'shoal-system');
  let certA: ServingCertificate;
  let certB: ServingCertificate;
  let dir: string;

  before(async function () {
    certA = issueServingCertificate(ca, { dnsNames: names });
    certB = issueServingCertificate(ca, { dnsNames: names });
    dir = await mkdtemp(join(tmpdir(), 'shoal-certs-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function start(certFile: string, keyFile: string, logs: string[] = []): Promise<RunningWebhook> {
    return createWebhook({
      addr: { host: '127.0.0.1', port: 0 },
      metricsAddr: { host: '127.0.0.1', port: 0 },
      tls: { kind: 'files', certFile, keyFile, reloadIntervalMs: RELOAD_MS },
      resolver: new FakeResolver(),
      kube: undefined,
      caBundlePublisher: undefined,
      logger: createLogger({ write: (line) => logs.push(line) }),
    });
  }

  async function until(what: string, check: () => Promise<boolean>, withinMs: number): Promise<number> {
    const started = performance.now();
    while (performance.now() - started < withinMs) {
      if (await check()) return performance.now() - started;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`${what}: not within ${withinMs} ms`);
  }

  it('serves the new certificate to new connections after a rotation; a connection already open keeps working', async function () {
    const volume = new SecretVolume(await mkdtemp(join(dir, 'volume-')));
    await volume.write(certA);
    const webhook = await start(volume.certFile, volume.keyFile);
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: ca.certPem, servername: SERVICE_HOST });
    const post = () =>
      new Promise<{ status: number; socket: TLSSocket; peer: string | undefined; reused: boolean }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: webhook.port, method: 'POST', path: '/mutate', agent, headers: { 'Content-Type': 'application/json' } }, (res) => {
          // The agent takes the socket back at the end of the response.
          const socket = res.socket as TLSSocket;
          const peer = socket.getPeerX509Certificate()?.fingerprint256;
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode!, socket, peer, reused: req.reusedSocket }));
        });
        req.on('error', reject);
        req.end(JSON.stringify(createReview(pod({ containers: [{ name: 'web', image: 'nginx@sha256:' + 'a'.repeat(64) }] }))));
      });
    try {
      const first = await post();
      assert.equal(first.status, 200);
      assert.equal(first.peer, fingerprint(certA.cert));
      assert.equal(await newConnectionSees(webhook.port, ca.certPem), fingerprint(certA.cert));

      await volume.write(certB);
      const took = await until('a new connection sees cert B', async () => (await newConnectionSees(webhook.port, ca.certPem)) === fingerprint(certB.cert), RELOAD_MS + 1500);
      assert.ok(took < RELOAD_MS + 1500);

      const again = await post();
      assert.equal(again.status, 200);
      assert.equal(again.reused, true, 'the same keep-alive connection');
      // The connection that was set up with cert A before the rotation (Node gives the peer certificate only on first use).
      assert.equal(again.socket, first.socket);
    } finally {
      agent.destroy();
      await webhook.close();
    }
  });

  it('keeps the previous certificate while the files are inconsistent (new cert, old key), and takes the pair once it matches', async function () {
    const certFile = join(dir, 'plain.crt');
    const keyFile = join(dir, 'plain.key');
    await writeFile(certFile, certA.cert);
    await writeFile(keyFile, certA.key);
    const logs: string[] = [];
    const webhook = await start(certFile, keyFile, logs);
    try {
      await writeFile(certFile, certB.cert);
      await until('the mismatch is noticed', () => Promise.resolve(logs.some((l) => l.includes('new TLS files not used yet'))), RELOAD_MS + 1500);
      assert.equal(await newConnectionSees(webhook.port, ca.certPem), fingerprint(certA.cert));
      const warning = JSON.parse(logs.find((l) => l.includes('new TLS files not used yet'))!) as Record<string, string>;
      assert.equal(warning.level, 'warn');
      assert.match(warning.problem!, /key values mismatch/);
      assert.ok(!logs.join('').includes('PRIVATE KEY'), 'no key material in the log');

      await writeFile(keyFile, certB.key);
      await until('cert B is served', async () => (await newConnectionSees(webhook.port, ca.certPem)) === fingerprint(certB.cert), RELOAD_MS + 1500);
      assert.equal(logs.filter((l) => l.includes('new TLS files not used yet')).length, 1, 'one warning for one broken pair');
    } finally {
      await webhook.close();
    }
  });

  it('refuses to start on files that cannot serve, saying why', async function () {
    const certFile = join(dir, 'start.crt');
    const keyFile = join(dir, 'start.key');
    await assert.rejects(CertFiles.open({ certFile, keyFile, logger: silentLogger }), (err: Error) => err instanceof CertFilesError && /cannot read the TLS files: ENOENT/.test(err.message));
    await writeFile(certFile, certA.cert);
    await writeFile(keyFile, certB.key);
    await assert.rejects(CertFiles.open({ certFile, keyFile, logger: silentLogger }), (err: Error) => err instanceof CertFilesError && /start\.crt and .*start\.key cannot serve TLS: .*key values mismatch/.test(err.message));
    await writeFile(certFile, 'not a certificate');
    await assert.rejects(CertFiles.open({ certFile, keyFile, logger: silentLogger }), CertFilesError);
  });
});
