/**
 * Mounts left under a directory: containerd mounts overlay snapshots under its
 * root while unpacking, and a crash can leave them behind; rm -rf then fails
 * with EBUSY and the next run cannot reuse the path.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { run } from './procs.ts';

// mountinfo escapes space, tab, newline and backslash as \ooo.
function unescapeMountPath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points at or below dir, deepest first. */
export function mountsUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const base = realpathSync(dir);
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map(unescapeMountPath)
    .filter((p) => p === base || p.startsWith(base + '/'));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Unmounts everything below dir (lazily if busy); returns the errors, never throws. */
export async function unmountUnder(dir: string): Promise<Error[]> {
  const errors: Error[] = [];
  for (const point of mountsUnder(dir)) {
    try {
      await run('umount', [point]);
    } catch {
      try {
        // A busy mount is detached now and freed when its last user goes.
        await run('umount', ['-l', point]);
      } catch (err) {
        errors.push(err as Error);
      }
    }
  }
  const left = mountsUnder(dir);
  if (left.length > 0) errors.push(new Error(`still mounted under ${dir}: ${left.join(', ')}`));
  return errors;
}
