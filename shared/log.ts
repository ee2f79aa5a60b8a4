/**
 * Structured logs: one JSON object a line on stderr. Fields are plain values;
 * callers never pass credentials.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

export type LogFields = Readonly<Record<string, unknown>>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger whose lines all carry these fields too. */
  with(fields: LogFields): Logger;
}

export interface LoggerInit {
  /** Lowest level written. Default `info`. */
  level?: LogLevel;
  /** Where lines go. Default process.stderr. */
  write?: (line: string) => void;
}

export function createLogger(init: LoggerInit = {}, base: LogFields = {}): Logger {
  const min = LOG_LEVELS.indexOf(init.level ?? 'info');
  const write = init.write ?? ((line: string) => process.stderr.write(line));
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (LOG_LEVELS.indexOf(level) < min) return;
    const record: Record<string, unknown> = { time: new Date().toISOString(), level, msg, ...base, ...fields };
    for (const [key, value] of Object.entries(record)) {
      if (value instanceof Error) record[key] = value.message;
    }
    write(`${JSON.stringify(record)}\n`);
  };
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    with: (fields) => createLogger(init, { ...base, ...fields }),
  };
}

/** A logger that writes nothing, for tests. */
export const silentLogger: Logger = createLogger({ write: () => {} });
