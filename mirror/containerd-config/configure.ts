import { link, mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { silentLogger, type Logger } from '../../shared/log.ts';
import { writeFileAtomic } from './atomic-write.ts';
import { findDockerCertificates } from './docker-certs.ts';
import { createRoot, findShoalDirs, hostDirName, isDirectory, readIfExists, restoreDir } from './host-dirs.ts';
import { resolveConfigureOptions, type ContainerdConfigOptions, type HostsTarget } from './options.ts';
import { renderHostsToml } from './render.ts';
import { BACKUP_NAME, readState, stateHeader, type ShoalState } from './state.ts';

export interface ConfigureResult {
  /** hosts.toml files written. */
  readonly written: readonly string[];
  /** Directories put back because they are no longer mirrored. */
  readonly restored: readonly string[];
}

interface Plan {
  readonly dirName: string;
  readonly previous: ShoalState['previous'];
  /** The user's hosts.toml is still in place and must be kept as the backup first. */
  readonly backUp: boolean;
  readonly body: string;
}

/**
 * Points containerd at the mirror: writes `<configPath>/<registry>/hosts.toml` for each
 * mirrored registry, keeping what was there for `cleanup`. Running it again rewrites
 * Shoal's files from the original state, and restores registries no longer listed.
 */
export async function configure(opts: ContainerdConfigOptions, logger: Logger = silentLogger): Promise<ConfigureResult> {
  const options = resolveConfigureOptions(opts);
  const root = resolve(options.configPath);
  const earlier = await findShoalDirs(root);
  // Everything is read and rendered before anything is written, so bad input changes nothing.
  const plans = await Promise.all(options.targets.map((t) => plan(root, t, options.mirror, options.prependExisting)));

  const created = await createRoot(root);
  // A later run finds the config path already there: keep knowing that Shoal made it.
  const createdRootLevels = created > 0 ? created : Math.max(0, ...[...earlier.values()].map((s) => s.createdRootLevels));
  const written: string[] = [];
  for (const p of plans) {
    const dir = join(root, p.dirName);
    const file = join(dir, 'hosts.toml');
    if (p.previous === 'no-dir') await mkdir(dir, { recursive: true });
    if (p.backUp) {
      // A hard link keeps the user's file itself (bytes, mode, owner, times) for cleanup to rename back.
      await rm(join(dir, BACKUP_NAME), { force: true });
      await link(file, join(dir, BACKUP_NAME));
    }
    await writeFileAtomic(file, stateHeader({ previous: p.previous, createdRootLevels }) + p.body, 0o644);
    written.push(file);
    logger.info('wrote containerd hosts.toml', { path: file, mirror: options.mirror.href, previous: p.previous });
  }

  const restored: string[] = [];
  for (const [name, state] of earlier) {
    if (plans.some((p) => p.dirName === name)) continue;
    await restoreDir(root, name, state);
    restored.push(join(root, name));
    logger.info('restored registry directory no longer mirrored', { path: join(root, name) });
  }
  return { written, restored };
}

async function plan(root: string, target: HostsTarget, mirror: URL, prependExisting: boolean): Promise<Plan> {
  const dirName = await hostDirName(root, target.host);
  const dir = join(root, dirName);
  const file = join(dir, 'hosts.toml');
  const current = await readIfExists(file);
  const ours = current === undefined ? undefined : readState(current, file);

  let previous: ShoalState['previous'];
  let userFile: string | undefined;
  if (ours !== undefined) {
    previous = ours.previous;
    if (previous === 'file' && prependExisting) userFile = await readBackup(dir);
  } else if (current !== undefined) {
    previous = 'file';
    userFile = current;
  } else {
    previous = (await isDirectory(dir)) ? 'none' : 'no-dir';
  }
  const serverCertificates = previous === 'none' ? await findDockerCertificates(dir) : undefined;

  let body: string;
  try {
    body = renderHostsToml({ server: target.server, mirror, existing: prependExisting ? userFile : undefined, serverCertificates });
  } catch (err) {
    const source = ours === undefined ? file : join(dir, BACKUP_NAME);
    throw new Error(`${source}: ${(err as Error).message}`, { cause: err });
  }
  return { dirName, previous, backUp: ours === undefined && current !== undefined, body };
}

async function readBackup(dir: string): Promise<string> {
  try {
    return await readFile(join(dir, BACKUP_NAME), 'utf8');
  } catch (err) {
    throw new Error(`${join(dir, BACKUP_NAME)}: Shoal's hosts.toml says the original is kept here, but it cannot be read`, { cause: err });
  }
}
