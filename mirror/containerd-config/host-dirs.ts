import { lstat, mkdir, readdir, readFile, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { BACKUP_NAME, readState, type ShoalState } from './state.ts';

/**
 * The directory containerd reads for `host`: for `host:port` it looks at `host_port_`
 * first, then `host:port` (remotes/docker/config/hosts_unix.go), so an existing
 * `host_port_` would hide a file written under `host:port`.
 */
export async function hostDirName(root: string, host: string): Promise<string> {
  const colon = host.lastIndexOf(':');
  if (colon > 0) {
    const alternative = `${host.slice(0, colon)}_${host.slice(colon + 1)}_`;
    if (await isDirectory(join(root, alternative))) return alternative;
  }
  return host;
}

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (err) {
    if (isCode(err, 'ENOENT', 'ENOTDIR')) return false;
    throw err;
  }
}

/** Reads a file, or undefined if it (or its directory) does not exist. */
export async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isCode(err, 'ENOENT', 'ENOTDIR')) return undefined;
    throw err;
  }
}

/** The directories under `root` whose hosts.toml Shoal wrote, by name. */
export async function findShoalDirs(root: string): Promise<Map<string, ShoalState>> {
  const found = new Map<string, ShoalState>();
  let names: string[];
  try {
    names = await readdir(root);
  } catch (err) {
    if (isCode(err, 'ENOENT')) return found;
    throw err;
  }
  for (const name of names.sort()) {
    const file = join(root, name, 'hosts.toml');
    const text = await readIfExists(file);
    const state = text === undefined ? undefined : readState(text, file);
    if (state !== undefined) found.set(name, state);
  }
  return found;
}

/** Puts `root/name` back as it was before Shoal wrote its hosts.toml there. */
export async function restoreDir(root: string, name: string, state: ShoalState): Promise<void> {
  const dir = join(root, name);
  const file = join(dir, 'hosts.toml');
  if (state.previous === 'file') {
    try {
      await rename(join(dir, BACKUP_NAME), file);
      return;
    } catch (err) {
      if (!isCode(err, 'ENOENT')) throw err;
      throw new Error(`cannot restore ${file}: its backup ${BACKUP_NAME} is gone; remove Shoal's file by hand`, { cause: err });
    }
  }
  await rm(file, { force: true });
  if (state.previous === 'no-dir') await removeIfEmpty(dir);
}

/** Creates the config path; returns how many directories that took (0 if it existed). */
export async function createRoot(root: string): Promise<number> {
  const first = await mkdir(root, { recursive: true });
  if (first === undefined) return 0;
  return relative(dirname(first), root).split(sep).length;
}

/** Removes the directories `createRoot` made, innermost first, stopping at one that is not empty. */
export async function removeCreatedRoot(root: string, levels: number): Promise<void> {
  let dir = root;
  for (let i = 0; i < levels; i++) {
    if (!(await removeIfEmpty(dir))) return;
    dir = dirname(dir);
  }
}

/** Someone else may have put files in a directory Shoal created: then it stays. */
async function removeIfEmpty(dir: string): Promise<boolean> {
  try {
    if (!(await lstat(dir)).isDirectory()) return false;
    await rmdir(dir);
    return true;
  } catch (err) {
    if (isCode(err, 'ENOENT', 'ENOTEMPTY', 'EEXIST')) return false;
    throw err;
  }
}

function isCode(err: unknown, ...codes: string[]): boolean {
  return err instanceof Error && codes.includes((err as NodeJS.ErrnoException).code ?? '');
}
