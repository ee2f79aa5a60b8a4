import { join, resolve } from 'node:path';
import { silentLogger, type Logger } from '../../shared/log.ts';
import { findShoalDirs, removeCreatedRoot, restoreDir } from './host-dirs.ts';
import { containerdConfigDefaults, type ContainerdConfigOptions } from './options.ts';

export interface CleanupResult {
  /** Directories put back as they were before `configure`. */
  readonly restored: readonly string[];
}

/**
 * Undoes `configure`: every hosts.toml Shoal wrote under the config path is replaced by
 * what was there before, whatever registries are listed now, so a changed list cannot
 * leave containerd pointed at a mirror that is gone. Without Shoal's files it does nothing.
 */
export async function cleanup(opts: ContainerdConfigOptions = {}, logger: Logger = silentLogger): Promise<CleanupResult> {
  const root = resolve(opts.containerdRegistryConfigPath ?? containerdConfigDefaults.containerdRegistryConfigPath);
  const dirs = await findShoalDirs(root);
  const restored: string[] = [];
  const failures: Error[] = [];
  for (const [name, state] of dirs) {
    try {
      await restoreDir(root, name, state);
      restored.push(join(root, name));
      logger.info('restored registry directory', { path: join(root, name), previous: state.previous });
    } catch (err) {
      failures.push(err as Error);
    }
  }
  if (failures.length > 0) {
    throw new AggregateError(failures, failures.map((e) => e.message).join('; '));
  }
  await removeCreatedRoot(root, Math.max(0, ...[...dirs.values()].map((s) => s.createdRootLevels)));
  return { restored };
}
