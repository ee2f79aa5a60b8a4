import assert from 'node:assert/strict';
import { parseMirroredRegistry } from '../../shared/registries.ts';
import { renderHostsToml } from './render.ts';
import { parseToml } from './testing.ts';

const mirror = new URL('http://10.0.0.7:5000');

/** The `[host]` keys in file order: the order containerd tries them. */
function hostOrder(text: string): string[] {
  return Object.keys(parseToml(text).host ?? {});
}

describe('renderHostsToml', function () {
  it('maps docker.io to registry-1.docker.io and puts the mirror first, pull and resolve only', function () {
    const text = renderHostsToml({ server: parseMirroredRegistry('docker.io').upstream, mirror });
    assert.equal(text, 'server = "https://registry-1.docker.io"\n\n[host."http://10.0.0.7:5000"]\n  capabilities = ["pull", "resolve"]\n');
    assert.deepEqual(parseToml(text), {
      server: 'https://registry-1.docker.io',
      host: { 'http://10.0.0.7:5000': { capabilities: ['pull', 'resolve'] } },
    });
  });

  it('keeps a plain-http registry on http', function () {
    const text = renderHostsToml({ server: parseMirroredRegistry('http://127.0.0.1:5000').upstream, mirror });
    assert.equal(parseToml(text).server, 'http://127.0.0.1:5000');
  });

  it('writes no server for _default, so containerd falls back to the pulled registry', function () {
    const text = renderHostsToml({ server: undefined, mirror });
    assert.deepEqual(parseToml(text), { host: { 'http://10.0.0.7:5000': { capabilities: ['pull', 'resolve'] } } });
  });

  it('names the server\'s Docker-style TLS files, which containerd stops reading once hosts.toml exists', function () {
    const text = renderHostsToml({
      server: new URL('https://ghcr.io'),
      mirror,
      serverCertificates: { ca: ['ca.crt'], client: [['a.cert', 'a.key'], ['b.cert', 'b.cert']] },
    });
    const parsed = parseToml(text);
    assert.deepEqual(parsed.ca, ['ca.crt']);
    assert.deepEqual(parsed.client, [['a.cert', 'a.key'], ['b.cert', 'b.cert']]);
    assert.deepEqual(hostOrder(text), ['http://10.0.0.7:5000']);
  });

  describe('with an existing file', function () {
    const existing = [
      '# managed by ansible',
      'server = "https://corp-proxy.example:8443"',
      'ca = "/etc/certs/corp.pem"',
      '',
      '[host."https://cache.example"]',
      '  capabilities = ["pull"]',
      '  client = [',
      '    ["/etc/certs/c.cert", "/etc/certs/c.key"],',
      '  ]',
      '  [host."https://cache.example".header]',
      '    x-custom = ["a"]',
      '',
      '[host."https://other.example"]',
      '  skip_verify = true',
      '',
    ].join('\n');

    it('keeps the user\'s server, settings, comments and hosts verbatim, after the mirror', function () {
      const text = renderHostsToml({ server: new URL('https://registry-1.docker.io'), mirror, existing });
      const parsed = parseToml(text);
      assert.equal(parsed.server, 'https://corp-proxy.example:8443');
      assert.equal(parsed.ca, '/etc/certs/corp.pem');
      assert.deepEqual(hostOrder(text), ['http://10.0.0.7:5000', 'https://cache.example', 'https://other.example']);
      assert.deepEqual((parsed.host as Record<string, unknown>)['https://cache.example'], {
        capabilities: ['pull'],
        client: [['/etc/certs/c.cert', '/etc/certs/c.key']],
        header: { 'x-custom': ['a'] },
      });
      assert.ok(text.includes('# managed by ansible\n'));
      assert.ok(text.includes(existing.slice(existing.indexOf('[host."https://cache.example"]')).trimEnd()));
    });

    it('adds our server when the user had none', function () {
      const text = renderHostsToml({ server: new URL('https://ghcr.io'), mirror, existing: '[host."https://cache.example"]\n' });
      assert.equal(parseToml(text).server, 'https://ghcr.io');
      assert.deepEqual(hostOrder(text), ['http://10.0.0.7:5000', 'https://cache.example']);
    });

    it('adds no server for _default when the user had none', function () {
      const text = renderHostsToml({ server: undefined, mirror, existing: '[host."https://cache.example"]\n' });
      assert.equal(parseToml(text).server, undefined);
    });

    for (const key of ['http://10.0.0.7:5000', 'http://10.0.0.7:5000/', 'http://10.0.0.7:5000/v2']) {
      it(`does not list the mirror twice when the user has it as "${key}"`, function () {
        const user = `[host."${key}"]\n  capabilities = ["pull"]\n  [host."${key}".header]\n    a = "b"\n\n[host."https://cache.example"]\n`;
        const text = renderHostsToml({ server: undefined, mirror, existing: user });
        assert.deepEqual(hostOrder(text), ['http://10.0.0.7:5000', 'https://cache.example']);
        assert.deepEqual((parseToml(text).host as Record<string, unknown>)['http://10.0.0.7:5000'], { capabilities: ['pull', 'resolve'] });
      });
    }

    it('keeps an entry for the same address on another scheme', function () {
      const text = renderHostsToml({ server: undefined, mirror, existing: '[host."10.0.0.7:5000"]\n' });
      assert.deepEqual(hostOrder(text), ['http://10.0.0.7:5000', '10.0.0.7:5000']);
    });

    it('refuses hosts it cannot place after the mirror', function () {
      assert.throws(() => renderHostsToml({ server: undefined, mirror, existing: 'host."https://a".capabilities = ["pull"]\n' }), /\[host\."URL"\] tables only/);
      assert.throws(() => renderHostsToml({ server: undefined, mirror, existing: '[host]\n"https://a" = { capabilities = ["pull"] }\n' }), /\[host\."URL"\] tables only/);
    });

    it('reports where a file it cannot read is broken', function () {
      assert.throws(() => renderHostsToml({ server: undefined, mirror, existing: 'server = "https://a\n' }), /line 1: unterminated string/);
    });
  });
});
