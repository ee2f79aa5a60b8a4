/**
 * Command-line flags with environment fallbacks. Each flag is declared once with
 * its parser, default and help text; `--name value`, `--name=value` and, for
 * booleans, bare `--name` are accepted; `SHOAL_<NAME_IN_UPPER_SNAKE>` is read
 * when the flag is absent. Bad input raises a UsageError (exit code 2).
 */

export class UsageError extends Error {
  override name = 'UsageError';
}

export interface Flag<T> {
  readonly description: string;
  /** What --help shows as the default ("" for none). */
  readonly defaultText: string;
  /** Booleans may be given without a value. */
  readonly isBoolean: boolean;
  /** Placeholder for the value in --help, e.g. ADDR. */
  readonly valueName: string;
  readonly parse: (raw: string) => T;
  /** The value when neither flag nor env gives one; throws UsageError when required. */
  readonly fallback: (flagName: string) => T;
}

export type Flags = Readonly<Record<string, Flag<unknown>>>;
export type FlagValues<F extends Flags> = { -readonly [K in keyof F]: F[K] extends Flag<infer T> ? T : never };

function make<T>(description: string, valueName: string, parse: (raw: string) => T, def: T | undefined, defaultText: string, isBoolean = false): Flag<T> {
  return {
    description,
    valueName,
    defaultText,
    isBoolean,
    parse,
    fallback: (flagName) => {
      if (def === undefined) throw new UsageError(`--${flagName} is required`);
      return def;
    },
  };
}

export const flag = {
  string(description: string, def: string | undefined, valueName = 'STRING'): Flag<string> {
    return make(description, valueName, (raw) => raw, def, def === undefined ? '' : JSON.stringify(def));
  },
  bool(description: string, def: boolean): Flag<boolean> {
    return make(description, 'BOOL', parseBool, def, String(def), true);
  },
  int(description: string, def: number, min = 0, max = Number.MAX_SAFE_INTEGER): Flag<number> {
    return make(description, 'N', (raw) => parseIntIn(raw, min, max), def, String(def));
  },
  duration(description: string, defText: string): Flag<number> {
    return make(description, 'DURATION', parseDuration, parseDuration(defText), defText);
  },
  /** A flag with a parser of its own; `defText` is both help text and the raw default (undefined: required). */
  custom<T>(description: string, valueName: string, parse: (raw: string) => T, defText: string | undefined): Flag<T> {
    return make(description, valueName, parse, defText === undefined ? undefined : parse(defText), defText === undefined ? '' : JSON.stringify(defText));
  },
};

export function parseBool(raw: string): boolean {
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new Error(`"${raw}" is not a boolean (true or false)`);
}

function parseIntIn(raw: string, min: number, max: number): number {
  if (!/^[0-9]+$/.test(raw)) throw new Error(`"${raw}" is not a whole number`);
  const n = Number(raw);
  if (n < min || n > max) throw new Error(`${n} is out of range [${min}, ${max}]`);
  return n;
}

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go-style durations (`20ms`, `10s`, `1m30s`, and as in Go a bare `0`) to milliseconds. */
export function parseDuration(raw: string): number {
  if (raw === '0') return 0;
  const parts = raw.match(/^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+$/) ? raw.match(/[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h)/g) : null;
  if (!parts) throw new Error(`"${raw}" is not a duration (e.g. 500ms, 10s, 5m, 1h)`);
  let ms = 0;
  for (const part of parts) {
    const unit = part.match(/(ms|s|m|h)$/)![1]!;
    ms += Number(part.slice(0, -unit.length)) * UNIT_MS[unit]!;
  }
  return ms;
}

export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

export function envName(key: string): string {
  return `SHOAL_${flagName(key).replace(/-/g, '_').toUpperCase()}`;
}

/** Parses args (without the subcommand) against flags; env supplies absent flags. */
export function parseFlags<F extends Flags>(flags: F, args: readonly string[], env: NodeJS.ProcessEnv): FlagValues<F> {
  const byName = new Map(Object.keys(flags).map((key) => [flagName(key), key]));
  const raw = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const key = byName.get(name);
    if (key === undefined) throw new UsageError(`unknown flag --${name}`);
    let value: string;
    if (eq !== -1) {
      value = arg.slice(eq + 1);
    } else if (flags[key]!.isBoolean) {
      value = 'true';
    } else {
      const next = args[i + 1];
      if (next === undefined) throw new UsageError(`--${name} needs a value`);
      value = next;
      i++;
    }
    if (raw.has(key)) throw new UsageError(`--${name} given twice`);
    raw.set(key, value);
  }
  const values: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(flags)) {
    const name = flagName(key);
    const given = raw.get(key) ?? env[envName(key)];
    if (given === undefined) {
      values[key] = spec.fallback(name);
      continue;
    }
    try {
      values[key] = spec.parse(given);
    } catch (err) {
      const source = raw.has(key) ? `--${name}` : envName(key);
      throw new UsageError(`${source}: ${(err as Error).message}`);
    }
  }
  return values as FlagValues<F>;
}

export function flagsHelp(flags: Flags): string {
  const rows = Object.entries(flags).map(([key, spec]) => {
    const left = `  --${flagName(key)}${spec.isBoolean ? '' : ` ${spec.valueName}`}`;
    const def = spec.defaultText === '' ? '' : ` (default ${spec.defaultText})`;
    return { left, right: `${spec.description}${def} [${envName(key)}]` };
  });
  const width = Math.max(...rows.map((r) => r.left.length)) + 2;
  return rows.map((r) => r.left.padEnd(width) + r.right).join('\n');
}
