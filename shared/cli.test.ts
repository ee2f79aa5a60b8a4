import assert from 'node:assert/strict';
import { UsageError, envName, flag, flagsHelp, parseDuration, parseFlags } from './cli.ts';
import { parseListenAddress } from './listen-address.ts';

const flags = {
  registryAddr: flag.custom('API address.', 'ADDR', parseListenAddress, ':5000'),
  dataDir: flag.string('State.', '/var/lib/shoal', 'PATH'),
  prependExisting: flag.bool('Keep entries.', false),
  resolveTimeout: flag.duration('Timeout.', '20ms'),
  target: flag.string('Required.', undefined, 'URL'),
};

describe('parseFlags', () => {
  it('takes --flag value, --flag=value, bare booleans, and defaults', () => {
    const v = parseFlags(flags, ['--registry-addr', '127.0.0.1:6000', '--data-dir=/tmp/x', '--prepend-existing', '--target', 'http://a'], {});
    assert.deepEqual(v, { registryAddr: { host: '127.0.0.1', port: 6000 }, dataDir: '/tmp/x', prependExisting: true, resolveTimeout: 20, target: 'http://a' });
  });
  it('falls back to SHOAL_* env, and flags win over env', () => {
    const env = { SHOAL_DATA_DIR: '/env', SHOAL_TARGET: 'http://env', SHOAL_PREPEND_EXISTING: 'true' };
    const v = parseFlags(flags, ['--data-dir=/flag'], env);
    assert.equal(v.dataDir, '/flag');
    assert.equal(v.target, 'http://env');
    assert.equal(v.prependExisting, true);
    assert.equal(envName('containerdContentPath'), 'SHOAL_CONTAINERD_CONTENT_PATH');
  });
  const bad: [string[], RegExp][] = [
    [['--nope'], /unknown flag --nope/],
    [['--target'], /--target needs a value/],
    [[], /--target is required/],
    [['--target=x', '--registry-addr', 'nowhere'], /--registry-addr: "nowhere" is not an address/],
    [['--target=x', '--prepend-existing=maybe'], /--prepend-existing: "maybe" is not a boolean/],
    [['--target=x', '--resolve-timeout=soon'], /--resolve-timeout: "soon" is not a duration/],
    [['--target=x', 'stray'], /unexpected argument "stray"/],
    [['--target=x', '--target=y'], /--target given twice/],
  ];
  for (const [args, message] of bad) {
    it(`rejects ${JSON.stringify(args)} with a UsageError`, () => {
      assert.throws(() => parseFlags(flags, args, {}), (err: unknown) => err instanceof UsageError && message.test(err.message));
    });
  }
  it('names the env variable when a bad value came from it', () => {
    assert.throws(() => parseFlags(flags, ['--target=x'], { SHOAL_REGISTRY_ADDR: 'x' }), /SHOAL_REGISTRY_ADDR: "x" is not an address/);
  });
  it('help lists every flag with its default and env name', () => {
    const help = flagsHelp(flags);
    assert.match(help, /--registry-addr ADDR\s+API address\. \(default ":5000"\) \[SHOAL_REGISTRY_ADDR\]/);
    assert.match(help, /--prepend-existing\s+Keep entries\. \(default false\)/);
    assert.match(help, /--resolve-timeout DURATION\s+Timeout\. \(default 20ms\)/);
  });
});

describe('parseDuration', () => {
  it('reads Go-style durations', () => {
    assert.equal(parseDuration('20ms'), 20);
    assert.equal(parseDuration('1m30s'), 90_000);
    assert.equal(parseDuration('10m'), 600_000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('0'), 0);
    assert.equal(parseDuration('0s'), 0);
    assert.throws(() => parseDuration('10'), /not a duration/);
    assert.throws(() => parseDuration('00'), /not a duration/);
    assert.throws(() => parseDuration('ms'), /not a duration/);
  });
});

describe('parseListenAddress', () => {
  it('reads :port, host:port and [v6]:port', () => {
    assert.deepEqual(parseListenAddress(':5000'), { host: undefined, port: 5000 });
    assert.deepEqual(parseListenAddress('127.0.0.5:80'), { host: '127.0.0.5', port: 80 });
    assert.deepEqual(parseListenAddress('[::1]:9090'), { host: '::1', port: 9090 });
    assert.throws(() => parseListenAddress('5000'));
    assert.throws(() => parseListenAddress(':70000'), /out of range/);
  });
});
