import assert from 'node:assert/strict';
import { splitHostsToml } from './split-hosts-toml.ts';

describe('splitHostsToml', function () {
  it('splits at table headers and decodes their quoted keys', function () {
    const layout = splitHostsToml([
      'server = "https://a"  # the default',
      '[host."https://b:5000"]   # comment',
      '  capabilities = ["pull"]',
      "[ host . 'https://c' . header ]",
      '[host."\\u0068ttps://d\\"q"]',
    ].join('\n'));
    assert.deepEqual(layout.rootLines, ['server = "https://a"  # the default']);
    assert.deepEqual(layout.rootKeys, ['server']);
    assert.deepEqual(layout.sections.map((s) => s.path), [
      ['host', 'https://b:5000'],
      ['host', 'https://c', 'header'],
      ['host', 'https://d"q'],
    ]);
    assert.deepEqual(layout.sections[0]?.lines, ['[host."https://b:5000"]   # comment', '  capabilities = ["pull"]']);
  });

  it('does not take lines inside a multi-line array or string for headers', function () {
    const layout = splitHostsToml([
      'client = [',
      '  ["/c.cert", "/c.key"],',
      ']',
      'note = """',
      '[host."https://not-a-header"]',
      'still "the string" """',
      'lit = \'\'\'',
      '[nor-this]\'\'\'',
      '[host."https://real"]',
      '  header = { a = "[x" } # ] unbalanced in a comment',
    ].join('\n'));
    assert.deepEqual(layout.rootKeys, ['client', 'note', 'lit']);
    assert.equal(layout.rootLines.length, 8);
    assert.deepEqual(layout.sections.map((s) => s.path), [['host', 'https://real']]);
  });

  it('treats an empty file as no settings and no hosts', function () {
    assert.deepEqual(splitHostsToml(''), { rootLines: [''], rootKeys: [], sections: [] });
  });

  it('reads CRLF files', function () {
    const layout = splitHostsToml('server = "https://a"\r\n[host."https://b"]\r\n');
    assert.deepEqual(layout.rootLines, ['server = "https://a"']);
    assert.deepEqual(layout.sections, [{ path: ['host', 'https://b'], lines: ['[host."https://b"]'] }]);
  });

  it('names the line of a malformed file', function () {
    assert.throws(() => splitHostsToml('a = 1\n[host."https://b"\n'), /^Error: line 2: expected "\]"/);
    assert.throws(() => splitHostsToml('a = 1\njust words\n'), /^Error: line 2: expected "key = value"/);
    assert.throws(() => splitHostsToml('a = "x\\q"\n[h."\\q"]\n'), /^Error: line 2: invalid escape/);
    assert.throws(() => splitHostsToml('a = ]\n'), /^Error: line 1: unbalanced/);
    assert.throws(() => splitHostsToml('a = """\nnever closed\n'), /unterminated """ string/);
    assert.throws(() => splitHostsToml('a = [\n1,\n'), /unterminated array/);
  });
});
