/** The mirror's command line as a process: exit codes, messages, --help, env fallbacks. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const MAIN = join(import.meta.dirname, '../../mirror/main.ts');

function mirror(args: string[], env: Record<string, string> = {}) {
  const res = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env }, timeout: 30_000 });
  return { code: res.status, stdout: res.stdout, stderr: res.stderr };
}

describe('mirror command line', function () {
  this.timeout(60_000);

  it('--help lists the commands, and each command lists its flags with defaults and env names', function () {
    const top = mirror(['--help']);
    assert.equal(top.code, 0);
    for (const cmd of ['serve', 'configure', 'cleanup']) assert.match(top.stdout, new RegExp(`^  ${cmd} `, 'm'));
    const serve = mirror(['serve', '--help']);
    assert.equal(serve.code, 0);
    for (const flag of ['registry-addr ADDR', 'metrics-addr ADDR', 'containerd-sock PATH', 'containerd-namespace NAME', 'containerd-content-path PATH', 'mirrored-registries LIST', 'data-dir PATH', 'log-level LEVEL']) {
      assert.match(serve.stdout, new RegExp(`--${flag} `), flag);
    }
    assert.match(serve.stdout, /\(default ":5000"\) \[SHOAL_REGISTRY_ADDR\]/);
    const configure = mirror(['configure', '--help']);
    assert.match(configure.stdout, /--mirror-target URL/);
    assert.match(configure.stdout, /--prepend-existing /);
  });

  const bad: [string[], Record<string, string>, RegExp][] = [
    [['--no-such-flag'], {}, /^shoal mirror serve: unknown flag --no-such-flag$/m],
    [['frobnicate'], {}, /unknown command "frobnicate" \(commands: serve, configure, cleanup\)/],
    [['serve', '--registry-addr', 'localhost'], {}, /--registry-addr: "localhost" is not an address/],
    [['serve', '--log-level', 'loud'], {}, /--log-level: "loud" is not one of debug, info, warn, error/],
    [['serve', '--mirrored-registries', 'ftp://x'], {}, /--mirrored-registries: registry URL "ftp:\/\/x" must be http:\/\/ or https:\/\//],
    [['serve'], { SHOAL_METRICS_ADDR: 'nowhere' }, /SHOAL_METRICS_ADDR: "nowhere" is not an address/],
    [['configure', '--containerd-registry-config-path', '/tmp/shoal-cli-test-never-written'], {}, /--mirror-target is required/],
    [['configure', '--mirror-target', 'ftp://10.0.0.1:5000', '--containerd-registry-config-path', '/tmp/shoal-cli-test-never-written'], {}, /--mirror-target "ftp:\/\/10.0.0.1:5000" must be http:\/\/ or https:\/\//],
    [['cleanup', '--prepend-existing=perhaps'], {}, /--prepend-existing: "perhaps" is not a boolean/],
  ];
  for (const [args, env, message] of bad) {
    it(`exits 2 with a clear message: ${JSON.stringify(args)}${Object.keys(env).length ? ` ${JSON.stringify(env)}` : ''}`, function () {
      const res = mirror(args, env);
      assert.equal(res.code, 2, res.stderr);
      assert.match(res.stderr, message);
      assert.match(res.stderr, /--help' lists its flags/);
    });
  }

  it('writes nothing when configure is refused', function () {
    assert.equal(spawnSync('test', ['-e', '/tmp/shoal-cli-test-never-written']).status, 1);
  });
});
