/**
 * Shoal's hosts.toml files carry, in a comment header, what the registry directory held
 * before: that marks the file as Shoal's (a second `configure` must not back it up as the
 * user's) and tells `cleanup` how to put things back, with no state kept anywhere else.
 */

export const BACKUP_NAME = 'hosts.toml.shoal-backup';
const MARKER = '# Written by Shoal';
const STATE_PREFIX = '# shoal-state: ';

export interface ShoalState {
  /**
   * What the registry directory held before: a hosts.toml (now hard-linked as
   * `hosts.toml.shoal-backup`), no hosts.toml, or no directory at all.
   */
  readonly previous: 'file' | 'none' | 'no-dir';
  /** How many directories (the config path, then its parents) `configure` created; `cleanup` removes them if empty. */
  readonly createdRootLevels: number;
}

export function stateHeader(state: ShoalState): string {
  const json = JSON.stringify({ previous: state.previous, createdRootLevels: state.createdRootLevels });
  return `${MARKER}: \`cleanup\` restores what was here before. Do not edit.\n${STATE_PREFIX}${json}\n`;
}

/** The state recorded in a hosts.toml, or undefined if Shoal did not write it. */
export function readState(text: string, path: string): ShoalState | undefined {
  if (!text.startsWith(MARKER)) return undefined;
  const line = text.split('\n')[1] ?? '';
  const bad = new Error(`${path} was written by Shoal but its "${STATE_PREFIX.trim()}" line is damaged; restore the directory by hand`);
  if (!line.startsWith(STATE_PREFIX)) throw bad;
  let value: unknown;
  try {
    value = JSON.parse(line.slice(STATE_PREFIX.length));
  } catch {
    throw bad;
  }
  const { previous, createdRootLevels } = (value ?? {}) as Record<string, unknown>;
  if ((previous !== 'file' && previous !== 'none' && previous !== 'no-dir')
    || typeof createdRootLevels !== 'number' || !Number.isInteger(createdRootLevels) || createdRootLevels < 0) {
    throw bad;
  }
  return { previous, createdRootLevels };
}
