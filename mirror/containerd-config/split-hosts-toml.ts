/**
 * Splits a user's hosts.toml at its table headers, keeping every line verbatim, so
 * --prepend-existing can put the mirror first without reformatting (or losing the
 * comments of) the user's file. It understands just enough TOML to find headers:
 * strings (also multi-line), comments, and arrays that span lines.
 */

export interface HostsTomlLayout {
  /** Lines before the first table header: `server` and its settings, comments. */
  readonly rootLines: readonly string[];
  /** First segment of each key set before the first header: `server`, `ca`, ... */
  readonly rootKeys: readonly string[];
  readonly sections: readonly TomlSection[];
}

export interface TomlSection {
  /** The header's key path, unquoted: `[host."http://a:5000".header]` is `['host', 'http://a:5000', 'header']`. */
  readonly path: readonly string[];
  /** The header line and every line up to the next header. */
  readonly lines: readonly string[];
}

interface ScanState {
  /** Inside a `"""` or `'''` string that continues on the next line. */
  multiline: '"""' | "'''" | undefined;
  /** Open `[` and `{` of a value that continues on the next line. */
  depth: number;
}

export function splitHostsToml(text: string): HostsTomlLayout {
  const lines = text.replace(/\r\n/g, '\n').replace(/\n$/, '').split('\n');
  const rootLines: string[] = [];
  const rootKeys: string[] = [];
  const sections: { path: string[]; lines: string[] }[] = [];
  const state: ScanState = { multiline: undefined, depth: 0 };

  lines.forEach((line, index) => {
    const at = (msg: string): Error => new Error(`line ${index + 1}: ${msg}`);
    const startOfStatement = state.multiline === undefined && state.depth === 0;
    const start = line.length - line.trimStart().length;
    if (startOfStatement && line[start] === '[') {
      sections.push({ path: parseHeader(line, start, at), lines: [line] });
      return;
    }
    let valueStart = 0;
    if (startOfStatement && line[start] !== undefined && line[start] !== '#') {
      const key = parseKey(line, start, at);
      const eq = skipSpaces(line, key.end);
      if (line[eq] !== '=') throw at('expected "key = value"');
      if (sections.length === 0 && key.segments[0] !== undefined) rootKeys.push(key.segments[0]);
      valueStart = eq + 1;
    }
    scanValue(line, valueStart, state, at);
    (sections.at(-1)?.lines ?? rootLines).push(line);
  });
  if (state.multiline !== undefined) throw new Error(`unterminated ${state.multiline} string`);
  if (state.depth !== 0) throw new Error('unterminated array or inline table');
  return { rootLines, rootKeys, sections };
}

function parseHeader(line: string, start: number, at: (msg: string) => Error): string[] {
  const array = line.startsWith('[[', start);
  const key = parseKey(line, start + (array ? 2 : 1), at);
  const close = skipSpaces(line, key.end);
  const closing = array ? ']]' : ']';
  if (!line.startsWith(closing, close)) throw at(`expected "${closing}" to close the table header`);
  const rest = skipSpaces(line, close + closing.length);
  if (rest < line.length && line[rest] !== '#') throw at('unexpected text after the table header');
  return key.segments;
}

/** A dotted key: bare, "basic" and 'literal' segments. */
function parseKey(line: string, from: number, at: (msg: string) => Error): { segments: string[]; end: number } {
  const segments: string[] = [];
  let i = from;
  for (;;) {
    i = skipSpaces(line, i);
    const ch = line[i];
    if (ch === '"') {
      const end = endOfBasicString(line, i + 1);
      if (end < 0) throw at('unterminated quoted key');
      segments.push(decodeBasic(line.slice(i + 1, end - 1), at));
      i = end;
    } else if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw at('unterminated quoted key');
      segments.push(line.slice(i + 1, end));
      i = end + 1;
    } else {
      const bare = /^[A-Za-z0-9_-]+/.exec(line.slice(i));
      if (bare === null) throw at('expected a key');
      segments.push(bare[0]);
      i += bare[0].length;
    }
    const next = skipSpaces(line, i);
    if (line[next] !== '.') return { segments, end: i };
    i = next + 1;
  }
}

/** Follows strings and brackets to the end of the line; a `#` outside strings ends it. */
function scanValue(line: string, from: number, state: ScanState, at: (msg: string) => Error): void {
  let i = from;
  while (i < line.length) {
    if (state.multiline !== undefined) {
      const close = findMultilineEnd(line, i, state.multiline);
      if (close < 0) return;
      state.multiline = undefined;
      i = close;
      continue;
    }
    const ch = line[i];
    if (ch === '#') return;
    if (line.startsWith('"""', i) || line.startsWith("'''", i)) {
      state.multiline = line.startsWith('"""', i) ? '"""' : "'''";
      i += 3;
    } else if (ch === '"') {
      i = endOfBasicString(line, i + 1);
      if (i < 0) throw at('unterminated string');
    } else if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw at('unterminated string');
      i = end + 1;
    } else {
      if (ch === '[' || ch === '{') state.depth++;
      if (ch === ']' || ch === '}') {
        state.depth--;
        if (state.depth < 0) throw at(`unbalanced "${ch}"`);
      }
      i++;
    }
  }
}

/** Index just past the closing delimiter (and up to two quotes it may end with), or -1. */
function findMultilineEnd(line: string, from: number, delimiter: '"""' | "'''"): number {
  for (let i = from; i < line.length; i++) {
    if (delimiter === '"""' && line[i] === '\\') {
      i++;
    } else if (line.startsWith(delimiter, i)) {
      let end = i + 3;
      // `""""` ends the string with one quote inside it; TOML allows up to two.
      while (end < i + 5 && line[end] === delimiter[0]) end++;
      return end;
    }
  }
  return -1;
}

/** Index just past the closing quote of a "basic" string whose content starts at `from`, or -1. */
function endOfBasicString(line: string, from: number): number {
  for (let i = from; i < line.length; i++) {
    if (line[i] === '\\') i++;
    else if (line[i] === '"') return i + 1;
  }
  return -1;
}

const ESCAPES: Readonly<Record<string, string>> = { b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', e: '\x1b', '"': '"', '\\': '\\' };

function decodeBasic(body: string, at: (msg: string) => Error): string {
  return body.replace(/\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)/g, (_, esc: string) => {
    if (esc.length > 1) return String.fromCodePoint(parseInt(esc.slice(1), 16));
    const decoded = ESCAPES[esc];
    if (decoded === undefined) throw at(`invalid escape "\\${esc}"`);
    return decoded;
  });
}

function skipSpaces(line: string, from: number): number {
  let i = from;
  while (line[i] === ' ' || line[i] === '\t') i++;
  return i;
}
