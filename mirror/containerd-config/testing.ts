/** Helpers for this directory's tests. */
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'smol-toml';

/** Every path under `root` with its type, permission bits and contents: equal snapshots mean an identical tree. */
export async function snapshotTree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const path = join(root, rel);
    const info = await lstat(path);
    const mode = (info.mode & 0o7777).toString(8);
    if (info.isDirectory()) {
      out.push(`${rel}/ dir ${mode}`);
      for (const name of (await readdir(path)).sort()) await walk(rel === '' ? name : `${rel}/${name}`);
    } else if (info.isSymbolicLink()) {
      out.push(`${rel} symlink -> ${await readlink(path)}`);
    } else {
      out.push(`${rel} file ${mode} ${JSON.stringify(await readFile(path, 'utf8'))}`);
    }
  };
  try {
    await walk('');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return ['(absent)'];
    throw err;
  }
  return out;
}

/** Parses TOML with an independent TOML 1.0 parser (not our splitter); throws if the text is not valid TOML. */
export function parseToml(text: string): Record<string, unknown> {
  // Round-trip through JSON: the parser builds null-prototype objects, which deepEqual tells apart.
  return JSON.parse(JSON.stringify(parse(text))) as Record<string, unknown>;
}
