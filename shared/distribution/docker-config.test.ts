import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DockerConfigError, normalizeRegistryKey, parseDockerConfig, readRegistryCredentialsFile } from './docker-config.ts';

const b64 = (text: string) => Buffer.from(text).toString('base64');

describe('parseDockerConfig', function () {
  it('normalises every key shape to host[:port], Docker Hub’s aliases to docker.io', function () {
    assert.equal(normalizeRegistryKey('https://index.docker.io/v1/'), 'docker.io');
    assert.equal(normalizeRegistryKey('index.docker.io'), 'docker.io');
    assert.equal(normalizeRegistryKey('registry-1.docker.io'), 'docker.io');
    assert.equal(normalizeRegistryKey('https://Registry.Example.com:5000/v2/'), 'registry.example.com:5000');
    assert.equal(normalizeRegistryKey('http://127.0.0.1:5000'), '127.0.0.1:5000');
    assert.equal(normalizeRegistryKey('ghcr.io/org/repo'), 'ghcr.io');
    assert.equal(normalizeRegistryKey('quay.io'), 'quay.io');
  });

  it('reads auth (base64 user:password, the password may hold colons) and username/password', function () {
    const config = parseDockerConfig(
      JSON.stringify({
        auths: {
          'https://index.docker.io/v1/': { auth: b64('hubuser:hub:pass'), email: 'x@example.com' },
          'ghcr.io': { username: 'octo', password: 'ghp_secret' },
        },
      }),
      'dockerconfigjson',
    );
    assert.deepEqual(config.credentialsFor('docker.io'), [{ kind: 'basic', username: 'hubuser', password: 'hub:pass' }]);
    assert.deepEqual(config.credentialsFor('index.docker.io'), config.credentialsFor('docker.io'));
    assert.deepEqual(config.credentialsFor('ghcr.io'), [{ kind: 'basic', username: 'octo', password: 'ghp_secret' }]);
    assert.deepEqual(config.credentialsFor('quay.io'), []);
    assert.deepEqual(config.registries, ['docker.io', 'ghcr.io']);
  });

  it('prefers auth over username/password when both are there (as Docker and the kubelet do)', function () {
    const config = parseDockerConfig(JSON.stringify({ auths: { 'r.example': { auth: b64('a:1'), username: 'b', password: '2' } } }), 'dockerconfigjson');
    assert.deepEqual(config.credentialsFor('r.example'), [{ kind: 'basic', username: 'a', password: '1' }]);
  });

  it('puts an identity token first; a username beside it alone is no credential', function () {
    const config = parseDockerConfig(
      JSON.stringify({
        auths: {
          'acr.example.io': { username: '00000000-0000-0000-0000-000000000000', identitytoken: 'refresh-me' },
          'both.example': { auth: b64('u:p'), identitytoken: 'tok' },
        },
      }),
      'dockerconfigjson',
    );
    assert.deepEqual(config.credentialsFor('acr.example.io'), [{ kind: 'identity-token', token: 'refresh-me' }]);
    assert.deepEqual(config.credentialsFor('both.example'), [
      { kind: 'identity-token', token: 'tok' },
      { kind: 'basic', username: 'u', password: 'p' },
    ]);
  });

  it('reads the legacy dockercfg format, whose top level is the auths map', function () {
    const config = parseDockerConfig(JSON.stringify({ 'https://registry.example:5000': { auth: b64('old:school'), email: 'e' } }), 'dockercfg');
    assert.deepEqual(config.credentialsFor('registry.example:5000'), [{ kind: 'basic', username: 'old', password: 'school' }]);
    assert.deepEqual(config.credentialsFor('registry.example'), []);
  });

  it('gathers every key for a host in file order, exact keys before wildcards', function () {
    const config = parseDockerConfig(
      JSON.stringify({
        auths: {
          '*.example.com': { auth: b64('wild:1') },
          'https://reg.example.com/v1/': { auth: b64('first:2') },
          'reg.example.com/team-b': { auth: b64('second:3') },
          '*.*.com': { auth: b64('two-labels:4') },
        },
      }),
      'dockerconfigjson',
    );
    assert.deepEqual(
      config.credentialsFor('reg.example.com').map((c) => (c.kind === 'basic' ? c.username : c.kind)),
      ['first', 'second', 'wild', 'two-labels'],
    );
    // A wildcard is one label, and ports must match.
    assert.deepEqual(config.credentialsFor('a.b.example.com'), []);
    assert.deepEqual(config.credentialsFor('reg.example.com:5000'), []);
  });

  it('skips entries without credentials and ignores other top-level fields', function () {
    const config = parseDockerConfig(JSON.stringify({ auths: { 'empty.example': {}, 'blank.example': { auth: '' } }, credsStore: 'desktop' }), 'dockerconfigjson');
    assert.deepEqual(config.registries, []);
    assert.deepEqual(parseDockerConfig('{}', 'dockerconfigjson').registries, []);
  });

  it('refuses broken content, naming the entry but never its secrets', function () {
    assert.throws(() => parseDockerConfig('not json', 'dockerconfigjson'), DockerConfigError);
    assert.throws(() => parseDockerConfig('[]', 'dockercfg'), /want a JSON object/);
    assert.throws(() => parseDockerConfig('{"auths": []}', 'dockerconfigjson'), /"auths" must be an object/);
    assert.throws(() => parseDockerConfig('{"auths": {"r.example": {"password": 5}}}', 'dockerconfigjson'), /"password" must be a string/);
    assert.throws(
      () => parseDockerConfig(JSON.stringify({ auths: { 'r.example': { auth: b64('no-colon-secret') } } }), 'dockerconfigjson'),
      (err: Error) => err instanceof DockerConfigError && err.message.includes('"r.example"') && !err.message.includes('no-colon-secret') && !err.message.includes(b64('no-colon-secret')),
    );
  });
});

describe('readRegistryCredentialsFile', function () {
  let dir: string;
  before(function () {
    dir = mkdtempSync(join(tmpdir(), 'shoal-docker-config-'));
  });
  after(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  it('tells dockerconfigjson from dockercfg by the auths object', async function () {
    const json = join(dir, 'config.json');
    writeFileSync(json, JSON.stringify({ auths: { 'a.example': { auth: b64('u:p') } } }));
    const cfg = join(dir, 'dockercfg');
    writeFileSync(cfg, JSON.stringify({ 'b.example': { auth: b64('v:q') } }));
    assert.deepEqual((await readRegistryCredentialsFile(json)).credentialsFor('a.example'), [{ kind: 'basic', username: 'u', password: 'p' }]);
    assert.deepEqual((await readRegistryCredentialsFile(cfg)).credentialsFor('b.example'), [{ kind: 'basic', username: 'v', password: 'q' }]);
  });

  it('says which file is missing or broken', async function () {
    await assert.rejects(readRegistryCredentialsFile(join(dir, 'absent.json')), /cannot read registry credentials file .*absent\.json/);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{');
    await assert.rejects(readRegistryCredentialsFile(bad), /bad\.json: not JSON/);
  });
});
