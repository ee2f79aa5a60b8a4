/** Test helpers for the spool's tests. */
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { join } from 'node:path';

export type Writev = (this: FileHandle, buffers: Uint8Array[], position: number) => Promise<{ bytesWritten: number }>;

/** Puts `spy(real)` in the place of every FileHandle's writev (the entry's writes) until the returned restore is called. */
export async function replaceWritev(scratch: string, spy: (real: Writev) => Writev): Promise<() => void> {
  const probe = await open(join(scratch, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { writev: Writev };
  await probe.close();
  const real = proto.writev;
  proto.writev = spy(real);
  return () => {
    proto.writev = real;
  };
}
