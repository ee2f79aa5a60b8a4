import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../../shared/cli.ts';
import { parseMirroredRegistries } from '../../shared/registries.ts';
import { cleanup } from './cleanup.ts';
import { configure } from './configure.ts';
import type { ContainerdConfigOptions } from './options.ts';
import { parseToml, snapshotTree } from './testing.ts';

const MIRROR = 'http://10.0.0.7:5000';
const USER_DOCKER_HOSTS = '# the admin\'s own\nserver = "https://corp-proxy.example"\n\n[host."https://cache.example"]\n  capabilities = ["pull"]\n';

describe('configure and cleanup', function () {
  let tmp: string;
  let root: string;
  const opts = (registries: string, more: Partial<ContainerdConfigOptions> = {}): ContainerdConfigOptions => ({
    containerdRegistryConfigPath: root,
    mirroredRegistries: parseMirroredRegistries(registries),
    mirrorTarget: MIRROR,
    ...more,
  });
  const read = (rel: string) => readFile(join(root, rel), 'utf8');
  /** The TOML containerd sees, the Shoal header being a comment. */
  const toml = async (rel: string) => parseToml(await read(rel));

  beforeEach(async function () {
    tmp = await mkdtemp(join(tmpdir(), 'shoal-containerd-config-'));
    root = join(tmp, 'certs.d');
  });
  afterEach(async function () {
    await rm(tmp, { recursive: true, force: true });
  });

  /** A config path an admin has set up: a registry with its own hosts.toml, one with certificates only, odd modes. */
  async function userTree(): Promise<void> {
    await mkdir(join(root, 'docker.io'), { recursive: true });
    await writeFile(join(root, 'docker.io', 'hosts.toml'), USER_DOCKER_HOSTS, { mode: 0o600 });
    await chmod(join(root, 'docker.io', 'hosts.toml'), 0o600);
    await mkdir(join(root, 'ghcr.io'));
    await writeFile(join(root, 'ghcr.io', 'ca.crt'), 'PEM');
    await chmod(join(root, 'ghcr.io'), 0o750);
    await mkdir(join(root, 'quay.io'));
    await writeFile(join(root, 'quay.io', 'hosts.toml'), 'server = "https://quay.io"\n');
  }

  it('writes docker.io with its API server and the mirror into a fresh config path', async function () {
    const result = await configure(opts('docker.io'));
    assert.deepEqual(result.written, [join(root, 'docker.io', 'hosts.toml')]);
    assert.deepEqual(await toml('docker.io/hosts.toml'), {
      server: 'https://registry-1.docker.io',
      host: { [MIRROR]: { capabilities: ['pull', 'resolve'] } },
    });
    assert.match(await read('docker.io/hosts.toml'), /^# Written by Shoal/);
    assert.equal((await stat(join(root, 'docker.io', 'hosts.toml'))).mode & 0o777, 0o644);
    assert.deepEqual(await readdir(join(root, 'docker.io')), ['hosts.toml'], 'no backup or temp file');
  });

  it('writes _default without a server when no registry is listed', async function () {
    await configure(opts(''));
    assert.deepEqual(await readdir(root), ['_default']);
    assert.deepEqual(await toml('_default/hosts.toml'), { host: { [MIRROR]: { capabilities: ['pull', 'resolve'] } } });
  });

  it('names a plain-http registry\'s directory host:port and keeps its server on http', async function () {
    await configure(opts('http://127.0.0.1:5000'));
    assert.equal((await toml('127.0.0.1:5000/hosts.toml')).server, 'http://127.0.0.1:5000');
  });

  it('writes into host_port_ when it exists, since containerd reads that directory first', async function () {
    await mkdir(join(root, '127.0.0.1_5000_'), { recursive: true });
    await configure(opts('http://127.0.0.1:5000'));
    assert.deepEqual(await readdir(root), ['127.0.0.1_5000_']);
    assert.match(await read('127.0.0.1_5000_/hosts.toml'), /\[host\."http:\/\/10\.0\.0\.7:5000"\]/);
  });

  it('carries Docker-style TLS files of a directory without hosts.toml into the server settings', async function () {
    await userTree();
    await writeFile(join(root, 'ghcr.io', 'me.cert'), 'PEM');
    await writeFile(join(root, 'ghcr.io', 'me.key'), 'PEM');
    await configure(opts('ghcr.io'));
    const parsed = await toml('ghcr.io/hosts.toml');
    assert.equal(parsed.server, 'https://ghcr.io');
    assert.deepEqual(parsed.ca, ['ca.crt']);
    assert.deepEqual(parsed.client, [['me.cert', 'me.key']]);
  });

  it('replaces an existing hosts.toml and keeps it, untouched, as the backup', async function () {
    await userTree();
    await configure(opts('docker.io'));
    const parsed = await toml('docker.io/hosts.toml');
    assert.equal(parsed.server, 'https://registry-1.docker.io');
    assert.deepEqual(Object.keys(parsed.host as object), [MIRROR]);
    assert.equal(await read('docker.io/hosts.toml.shoal-backup'), USER_DOCKER_HOSTS);
    assert.equal((await stat(join(root, 'docker.io', 'hosts.toml.shoal-backup'))).mode & 0o777, 0o600);
  });

  it('with prependExisting keeps the user\'s server and hosts after the mirror', async function () {
    await userTree();
    await configure(opts('docker.io', { prependExisting: true }));
    const parsed = await toml('docker.io/hosts.toml');
    assert.equal(parsed.server, 'https://corp-proxy.example');
    assert.deepEqual(Object.keys(parsed.host as object), [MIRROR, 'https://cache.example']);
    assert.match(await read('docker.io/hosts.toml'), /# the admin's own/);
  });

  it('run twice, backs up the user\'s file once and writes the same result', async function () {
    await userTree();
    for (const prependExisting of [false, true]) {
      await configure(opts('docker.io,quay.io', { prependExisting }));
      const once = await snapshotTree(root);
      await configure(opts('docker.io,quay.io', { prependExisting }));
      assert.deepEqual(await snapshotTree(root), once);
      assert.equal(await read('docker.io/hosts.toml.shoal-backup'), USER_DOCKER_HOSTS);
      assert.equal((await read('docker.io/hosts.toml')).split(`[host."${MIRROR}"]`).length, 2, 'mirror listed once');
    }
  });

  it('cleanup after two configures restores the original tree', async function () {
    await userTree();
    const before = await snapshotTree(tmp);
    await configure(opts('docker.io,ghcr.io,quay.io,registry.k8s.io'));
    await configure(opts('docker.io,ghcr.io,quay.io,registry.k8s.io', { prependExisting: true }));
    assert.notDeepEqual(await snapshotTree(tmp), before);
    const result = await cleanup({ containerdRegistryConfigPath: root });
    assert.equal(result.restored.length, 4);
    assert.deepEqual(await snapshotTree(tmp), before);
  });

  it('round trip leaves an identical tree: paths, contents, modes', async function () {
    await userTree();
    // A hosts.toml that is a symlink (config management) comes back as the same symlink.
    await writeFile(join(root, 'shared.toml'), 'server = "https://mirror.gcr.io"\n');
    await mkdir(join(root, 'mirror.gcr.io'));
    await symlink('../shared.toml', join(root, 'mirror.gcr.io', 'hosts.toml'));
    for (const registries of ['', 'docker.io', 'docker.io,ghcr.io,http://127.0.0.1:5000,mirror.gcr.io']) {
      const before = await snapshotTree(tmp);
      await configure(opts(registries));
      await cleanup(opts(registries));
      assert.deepEqual(await snapshotTree(tmp), before, `registries "${registries}"`);
    }
  });

  it('round trip removes the config path and parents it had to create', async function () {
    root = join(tmp, 'etc', 'containerd', 'certs.d');
    const before = await snapshotTree(tmp);
    await configure(opts('docker.io,ghcr.io'));
    await configure(opts('ghcr.io')); // a run that finds the config path already there
    await cleanup(opts(''));
    assert.deepEqual(await snapshotTree(tmp), before);
  });

  it('cleanup keeps a created directory someone else has since put files in', async function () {
    await configure(opts('ghcr.io'));
    await writeFile(join(root, 'ghcr.io', 'ca.crt'), 'PEM');
    await cleanup(opts(''));
    assert.deepEqual(await readdir(join(root, 'ghcr.io')), ['ca.crt']);
  });

  it('restores registries dropped from the list on the next configure', async function () {
    await userTree();
    const before = await snapshotTree(root);
    await configure(opts('docker.io,registry.k8s.io'));
    const result = await configure(opts('quay.io'));
    assert.deepEqual([...result.restored].sort(), [join(root, 'docker.io'), join(root, 'registry.k8s.io')]);
    await cleanup(opts(''));
    assert.deepEqual(await snapshotTree(root), before);
  });

  it('cleanup without configure changes nothing and succeeds', async function () {
    assert.deepEqual(await cleanup(opts('')), { restored: [] }, 'config path absent');
    assert.deepEqual(await snapshotTree(tmp), [`/ dir ${((await stat(tmp)).mode & 0o7777).toString(8)}`]);
    await userTree();
    const before = await snapshotTree(tmp);
    assert.deepEqual(await cleanup(opts('docker.io')), { restored: [] });
    assert.deepEqual(await snapshotTree(tmp), before);
  });

  it('cleanup leaves a hosts.toml the user wrote over Shoal\'s', async function () {
    await configure(opts('docker.io'));
    await writeFile(join(root, 'docker.io', 'hosts.toml'), USER_DOCKER_HOSTS);
    await cleanup(opts(''));
    assert.equal(await read('docker.io/hosts.toml'), USER_DOCKER_HOSTS);
  });

  it('cleanup reports a missing backup and still restores the other registries', async function () {
    await userTree();
    const quayBefore = await read('quay.io/hosts.toml');
    await configure(opts('docker.io,quay.io'));
    await rm(join(root, 'docker.io', 'hosts.toml.shoal-backup'));
    await assert.rejects(cleanup(opts('')), /docker\.io\/hosts\.toml: its backup hosts\.toml\.shoal-backup is gone/);
    assert.equal(await read('quay.io/hosts.toml'), quayBefore);
  });

  it('refuses a damaged Shoal state line instead of guessing', async function () {
    await configure(opts('docker.io'));
    const file = join(root, 'docker.io', 'hosts.toml');
    await writeFile(file, (await readFile(file, 'utf8')).replace('"previous":"no-dir"', '"previous":"maybe"'));
    await assert.rejects(cleanup(opts('')), /shoal-state:" line is damaged/);
  });

  describe('bad input', function () {
    for (const [name, more, message] of [
      ['no mirror target', { mirrorTarget: undefined }, /--mirror-target is required/],
      ['an empty mirror target', { mirrorTarget: ' ' }, /--mirror-target is required/],
      ['a mirror target without a scheme', { mirrorTarget: '10.0.0.7:5000' }, /is not a URL; expected http:\/\/host:port/],
      ['a mirror target whose host reads as a scheme', { mirrorTarget: 'localhost:5000' }, /must be http:\/\/ or https:\/\//],
      ['a non-http mirror target', { mirrorTarget: 'ftp://10.0.0.7:5000' }, /must be http:\/\/ or https:\/\//],
      ['a mirror target with a path', { mirrorTarget: 'http://10.0.0.7:5000/v2' }, /scheme:\/\/host\[:port\] only/],
      ['a mirror target that does not parse', { mirrorTarget: 'http://' }, /is not a URL/],
      ['a registry host that is a path', { mirroredRegistries: [{ host: '../etc', upstream: new URL('https://x') }] }, /"\.\.\/etc" is not a registry/],
      ['a registry named _default', { mirroredRegistries: [{ host: '_default', upstream: new URL('https://x') }] }, /"_default" is not a registry/],
      ['a registry listed twice', { mirroredRegistries: [...parseMirroredRegistries('ghcr.io'), ...parseMirroredRegistries('ghcr.io')] }, /listed twice/],
    ] as const) {
      it(`rejects ${name} with a UsageError and writes nothing`, async function () {
        await assert.rejects(configure(opts('docker.io', more)), (err: Error) => err instanceof UsageError && message.test(err.message));
        assert.deepEqual(await snapshotTree(root), ['(absent)']);
      });
    }

    it('leaves the tree untouched when an existing file cannot be prepended to', async function () {
      await userTree();
      await mkdir(join(root, 'registry.k8s.io'));
      await writeFile(join(root, 'registry.k8s.io', 'hosts.toml'), 'server = "https://registry.k8s.io\n');
      const before = await snapshotTree(root);
      await assert.rejects(configure(opts('docker.io,registry.k8s.io', { prependExisting: true })), /registry\.k8s\.io\/hosts\.toml: line 1: unterminated string/);
      assert.deepEqual(await snapshotTree(root), before);
    });
  });
});
