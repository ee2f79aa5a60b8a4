/** The webhook's command line as a process: --help, and exit 2 with a clear message on bad input. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const MAIN = join(import.meta.dirname, 'main.ts');

function webhook(args: string[], env: Record<string, string> = {}) {
  const res = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env }, timeout: 30_000 });
  return { code: res.status, stdout: res.stdout, stderr: res.stderr };
}

describe('webhook command line', function () {
  this.timeout(60_000);

  it('--help lists every flag with its default and env name', function () {
    const res = webhook(['--help']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^usage: node webhook\/main\.ts \[flags\]/);
    const flags = [
      'addr ADDR',
      'metrics-addr ADDR',
      'tls-cert-file PATH',
      'tls-key-file PATH',
      'tls-reload-interval DURATION',
      'self-signed',
      'service-name NAME',
      'service-namespace NAME',
      'webhook-config-name NAME',
      'kubeconfig PATH',
      'registry-credentials-file PATH',
      'plain-http-registries LIST',
      'mutable-tags REGEX',
      'cache-ttl DURATION',
      'resolve-budget DURATION',
      'router-addr ADDR',
      'network-key-file PATH',
      'bootstrap-peers LIST',
      'bootstrap-dns NAME',
      'peer-registry-port N',
      'log-level LEVEL',
    ];
    for (const flag of flags) assert.match(res.stdout, new RegExp(`^  --${flag} `, 'm'), flag);
    assert.match(res.stdout, /\(default ":8443"\) \[SHOAL_ADDR\]/);
    assert.match(res.stdout, /\(default ":9091"\) \[SHOAL_METRICS_ADDR\]/);
    assert.match(res.stdout, /\(default "\^latest\$"\) \[SHOAL_MUTABLE_TAGS\]/);
    assert.match(res.stdout, /\(default 2s\) \[SHOAL_RESOLVE_BUDGET\]/);
    assert.match(res.stdout, /\(default 60s\) \[SHOAL_CACHE_TTL\]/);
  });

  const bad: [string[], Record<string, string>, RegExp][] = [
    [['--no-such-flag'], {}, /^shoal webhook: unknown flag --no-such-flag$/m],
    [['serve'], {}, /^shoal webhook: unexpected argument "serve"$/m],
    [['--self-signed', '--addr', 'localhost'], {}, /--addr: "localhost" is not an address/],
    [['--self-signed'], { SHOAL_METRICS_ADDR: 'nowhere' }, /SHOAL_METRICS_ADDR: "nowhere" is not an address/],
    [['--self-signed', '--mutable-tags', '(latest'], {}, /--mutable-tags: "\(latest" is not a regular expression/],
    [['--self-signed', '--resolve-budget', '2'], {}, /--resolve-budget: "2" is not a duration/],
    [['--self-signed', '--resolve-budget', '45s'], {}, /--resolve-budget must be more than 0 and at most 29s/],
    [['--self-signed', '--cache-ttl', 'soon'], {}, /--cache-ttl: "soon" is not a duration/],
    [['--self-signed', '--plain-http-registries', 'http://registry.local:5000'], {}, /--plain-http-registries: "http:\/\/registry\.local:5000" is not a registry host\[:port\]/],
    [['--self-signed', '--peer-registry-port', '70000'], {}, /--peer-registry-port: 70000 is out of range/],
    [['--self-signed', '--log-level', 'loud'], {}, /--log-level: "loud" is not one of debug, info, warn, error/],
    [['--self-signed=perhaps'], {}, /--self-signed: "perhaps" is not a boolean/],
    [[], {}, /the webhook serves HTTPS only: give --tls-cert-file and --tls-key-file, or --self-signed/],
    [['--tls-cert-file', '/tmp/x.crt'], {}, /--tls-cert-file needs --tls-key-file/],
    [[], { SHOAL_TLS_KEY_FILE: '/tmp/x.key' }, /--tls-key-file needs --tls-cert-file/],
    [['--tls-cert-file', '/tmp/x.crt', '--tls-key-file', '/tmp/x.key', '--self-signed'], {}, /give either --tls-cert-file and --tls-key-file, or --self-signed, not both/],
  ];
  for (const [args, env, message] of bad) {
    it(`exits 2 with a clear message: ${JSON.stringify(args)}${Object.keys(env).length ? ` ${JSON.stringify(env)}` : ''}`, function () {
      const res = webhook(args, env);
      assert.equal(res.code, 2, res.stderr);
      assert.match(res.stderr, message);
      assert.match(res.stderr, /'node webhook\/main\.ts --help' lists its flags\./);
      assert.equal(res.stdout, '');
    });
  }
});
