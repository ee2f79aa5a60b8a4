/**
 * WWW-Authenticate challenges (RFC 7235 §4.1): one header may hold several
 * challenges, and fetch joins repeated headers with ", ", so the parser splits
 * challenges by recognising where a new scheme starts. Lenient where registries
 * are sloppy: unquoted values may hold `:` and `/`, and a missing comma between
 * parameters is tolerated.
 */

export interface Challenge {
  /** Lowercase: `bearer`, `basic`. */
  readonly scheme: string;
  /** Parameter names lowercased, values unquoted; the first of a repeated name wins. */
  readonly params: Readonly<Record<string, string>>;
  /** The token68 form (`Negotiate abc==`), when the challenge has one instead of parameters. */
  readonly token68?: string;
}

const TOKEN = /[!#$%&'*+.^_`|~0-9A-Za-z-]+/y;
const TOKEN68 = /[A-Za-z0-9._~+/-]+=*/y;
const UNQUOTED_VALUE = /[^,\s]*/y;

export function parseChallenges(header: string): Challenge[] {
  const s = header;
  let i = 0;
  const skipSpace = (): void => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const match = (re: RegExp): string | undefined => {
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m || m[0].length === 0) return undefined;
    i = re.lastIndex;
    return m[0];
  };
  const quoted = (): string => {
    i++; // opening quote
    let out = '';
    while (i < s.length && s[i] !== '"') {
      if (s[i] === '\\' && i + 1 < s.length) i++;
      out += s[i];
      i++;
    }
    i++; // closing quote (or past the end of an unterminated string)
    return out;
  };
  const atItemEnd = (at: number): boolean => {
    let j = at;
    while (j < s.length && (s[j] === ' ' || s[j] === '\t')) j++;
    return j >= s.length || s[j] === ',';
  };

  const out: Challenge[] = [];
  while (i < s.length) {
    while (i < s.length && (s[i] === ',' || s[i] === ' ' || s[i] === '\t')) i++;
    if (i >= s.length) break;
    const scheme = match(TOKEN);
    if (scheme === undefined) {
      i++; // not a challenge: skip the character and look for the next one
      continue;
    }
    skipSpace();
    const params: Record<string, string> = {};
    let token68: string | undefined;

    // `Scheme abc==`: a token68 instead of parameters (`name=` alone counts as one too, as RFC 7235 allows either reading).
    const start = i;
    const t68 = match(TOKEN68);
    if (t68 !== undefined && atItemEnd(i)) token68 = t68;
    else i = start;

    if (token68 === undefined) {
      for (;;) {
        const save = i;
        const name = match(TOKEN);
        if (name === undefined) break;
        skipSpace();
        if (s[i] !== '=') {
          i = save; // a bare token: the next challenge's scheme
          break;
        }
        i++;
        skipSpace();
        const value = s[i] === '"' ? quoted() : (match(UNQUOTED_VALUE) ?? '');
        const key = name.toLowerCase();
        if (!(key in params)) params[key] = value;
        skipSpace();
        if (s[i] === ',') {
          i++;
          skipSpace();
        }
      }
    }
    out.push(token68 === undefined ? { scheme: scheme.toLowerCase(), params } : { scheme: scheme.toLowerCase(), params, token68 });
  }
  return out;
}
