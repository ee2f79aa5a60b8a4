import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { connect } from 'node:tls';
import { silentLogger } from '../../shared/log.ts';
import { FakeResolver, startTestWebhook } from '../testing.ts';
import { createCertificateAuthority, issueServingCertificate, SelfSignedTls, serviceDnsNames } from './self-signed.ts';
import type { KeyPair } from './tls-source.ts';

const NAMES = ['shoal-webhook', 'shoal-webhook.shoal-system', 'shoal-webhook.shoal-system.svc', 'shoal-webhook.shoal-system.svc.cluster.local'];
const DAY_MS = 24 * 60 * 60 * 1000;

/** The certificate a TLS server presents to a client that trusts `ca` and asks for `servername`. */
function peerCertificate(port: number, ca: string, servername: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, servername }, () => {
      const cert = socket.getPeerX509Certificate();
      socket.end();
      if (cert === undefined) reject(new Error('no peer certificate'));
      else resolve(cert);
    });
    socket.on('error', reject);
  });
}

describe('self-signed certificates', function () {
  this.timeout(20_000);

  it("names the Service's four DNS names", function () {
    assert.deepEqual(serviceDnsNames('shoal-webhook', 'shoal-system'), NAMES);
  });

  it('makes a CA and a serving certificate with the right SANs, usages and chain', function () {
    const now = new Date();
    const ca = createCertificateAuthority({ now });
    const serving = issueServingCertificate(ca, { dnsNames: NAMES, now });
    const caCert = new X509Certificate(ca.certPem);
    const leaf = new X509Certificate(serving.cert);

    assert.equal(caCert.ca, true);
    assert.equal(caCert.checkIssued(caCert), true, 'the CA is self-issued');
    assert.equal(caCert.verify(caCert.publicKey), true);
    assert.match(caCert.subject, /CN=shoal-webhook-ca/);

    assert.equal(leaf.ca, false);
    assert.equal(leaf.subjectAltName, NAMES.map((n) => `DNS:${n}`).join(', '));
    assert.match(leaf.subject, /^CN=shoal-webhook$/);
    assert.equal(leaf.checkIssued(caCert), true);
    assert.equal(leaf.verify(caCert.publicKey), true);
    for (const name of NAMES) assert.equal(leaf.checkHost(name), name);
    assert.equal(leaf.checkHost('shoal-webhook.other.svc'), undefined);
    assert.equal(leaf.checkIP('127.0.0.1'), undefined);
    assert.deepEqual(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'serverAuth');
    assert.equal(leaf.checkPrivateKey(createPrivateKey(serving.key)), true);
    assert.notEqual(leaf.serialNumber, caCert.serialNumber);
    assert.ok(/^[4-7]/.test(leaf.serialNumber), 'a positive serial without a leading zero byte');

    const validFrom = Date.parse(leaf.validFrom);
    const validTo = Date.parse(leaf.validTo);
    assert.ok(validFrom <= now.getTime() && validFrom > now.getTime() - 10 * 60 * 1000, 'starts a few minutes back');
    assert.ok(Math.abs(validTo - (now.getTime() + 365 * DAY_MS)) < 2000, 'a year');
    assert.ok(Math.abs(Date.parse(caCert.validTo) - (now.getTime() + 3650 * DAY_MS)) < 2000, 'ten years');
  });

  it('serves HTTPS that verifies with the CA for every Service name, and for no other name', async function () {
    const hook = await startTestWebhook({ resolver: new FakeResolver() });
    try {
      for (const name of NAMES) {
        const cert = await peerCertificate(hook.webhook.port, hook.ca, name);
        assert.equal(cert.checkIssued(new X509Certificate(hook.ca)), true);
      }
      await assert.rejects(peerCertificate(hook.webhook.port, hook.ca, 'evil.example'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
      const otherCa = createCertificateAuthority().certPem;
      await assert.rejects(peerCertificate(hook.webhook.port, otherCa, NAMES[2]!), /self-signed|unable to verify|unable to get local issuer/);
    } finally {
      await hook.close();
    }
  });

  it('renews the serving certificate from the same CA before it expires', async function () {
    // A serving certificate of about a second, checked every 50 ms: due at once.
    const tls = new SelfSignedTls({ dnsNames: NAMES, logger: silentLogger, servingValidityDays: 1 / DAY_MS * 1000, renewCheckMs: 50 });
    try {
      const first = tls.current.cert;
      const renewed = await new Promise<KeyPair>((resolve) => tls.onRotate(resolve));
      assert.notEqual(renewed.cert, first);
      assert.equal(new X509Certificate(renewed.cert).checkIssued(new X509Certificate(tls.ca.certPem)), true);
      assert.equal(tls.current, renewed);
    } finally {
      tls.close();
    }
  });
});
