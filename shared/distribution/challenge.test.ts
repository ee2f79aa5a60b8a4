import assert from 'node:assert/strict';
import { chooseChallenge } from './auth.ts';
import { parseChallenges } from './challenge.ts';

describe('parseChallenges', function () {
  it('reads Docker Hub’s Bearer challenge', function () {
    const header = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"';
    assert.deepEqual(parseChallenges(header), [
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' } },
    ]);
  });

  it('reads distribution’s htpasswd Basic challenge', function () {
    assert.deepEqual(parseChallenges('Basic realm="shoal-test"'), [{ scheme: 'basic', params: { realm: 'shoal-test' } }]);
  });

  it('reads a challenge without scope (quay, ACR) and one with an error (insufficient_scope)', function () {
    assert.deepEqual(parseChallenges('Bearer realm="https://quay.io/v2/auth",service="quay.io"'), [
      { scheme: 'bearer', params: { realm: 'https://quay.io/v2/auth', service: 'quay.io' } },
    ]);
    const [c] = parseChallenges('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:org/app:pull",error="insufficient_scope"');
    assert.equal(c?.params.error, 'insufficient_scope');
    assert.equal(c?.params.scope, 'repository:org/app:pull');
  });

  it('reads ECR’s Basic challenge with a URL realm and a service', function () {
    assert.deepEqual(parseChallenges('Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com"'), [
      { scheme: 'basic', params: { realm: 'https://123456789012.dkr.ecr.us-east-1.amazonaws.com/', service: 'ecr.amazonaws.com' } },
    ]);
  });

  it('splits several challenges in one header (how fetch joins repeated headers)', function () {
    const header = 'Basic realm="registry", Bearer realm="https://auth.example/token",service="example", Negotiate';
    const challenges = parseChallenges(header);
    assert.deepEqual(
      challenges.map((c) => c.scheme),
      ['basic', 'bearer', 'negotiate'],
    );
    assert.deepEqual(challenges[1]?.params, { realm: 'https://auth.example/token', service: 'example' });
  });

  it('handles RFC 7235’s example: quoted escapes, a bare value, and a second challenge', function () {
    const header = 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"';
    assert.deepEqual(parseChallenges(header), [
      { scheme: 'newauth', params: { realm: 'apps', type: '1', title: 'Login to "apps"' } },
      { scheme: 'basic', params: { realm: 'simple' } },
    ]);
  });

  it('is case-insensitive in schemes and names, keeps value case, tolerates spaces and commas in quotes', function () {
    const [c] = parseChallenges('BEARER  Realm = "https://Auth.Example/Token" ,  Service="Reg", scope="repository:a/b:pull,push repository:c:pull"');
    assert.equal(c?.scheme, 'bearer');
    assert.deepEqual(c?.params, { realm: 'https://Auth.Example/Token', service: 'Reg', scope: 'repository:a/b:pull,push repository:c:pull' });
  });

  it('accepts unquoted URL values and a missing comma, as sloppy registries send them', function () {
    const [c] = parseChallenges('Bearer realm=https://auth.example/token service=example');
    assert.deepEqual(c?.params, { realm: 'https://auth.example/token', service: 'example' });
  });

  it('reads token68 challenges', function () {
    assert.deepEqual(parseChallenges('Negotiate abc123+/==, Basic realm="x"'), [
      { scheme: 'negotiate', params: {}, token68: 'abc123+/==' },
      { scheme: 'basic', params: { realm: 'x' } },
    ]);
  });

  it('keeps the first of a repeated parameter and survives garbage', function () {
    assert.deepEqual(parseChallenges('Bearer realm="a", realm="b"')[0]?.params, { realm: 'a' });
    assert.deepEqual(parseChallenges(''), []);
    assert.deepEqual(parseChallenges(', ,'), []);
    assert.equal(parseChallenges('Bearer realm="unterminated')[0]?.params.realm, 'unterminated');
    assert.deepEqual(
      parseChallenges('@@@ Basic realm="x"').map((c) => c.scheme),
      ['basic'],
    );
  });

  it('chooses Bearer with a realm over Basic, and Basic over schemes it does not speak', function () {
    assert.equal(chooseChallenge('Basic realm="r", Bearer realm="https://a/token"')?.scheme, 'bearer');
    assert.equal(chooseChallenge('Bearer service="no realm", Basic realm="r"')?.scheme, 'basic');
    assert.equal(chooseChallenge('Negotiate abc'), undefined);
    assert.equal(chooseChallenge(null), undefined);
  });
});
