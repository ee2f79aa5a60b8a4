/** Test helpers for shared/'s tests and those of the code built on it. */
import { ChunkPool } from './chunk-pool.ts';

/**
 * Fills every buffer a ChunkPool hands out with 0xee, until the returned
 * restore is called: a buffer reused while someone still reads it then shows
 * as changed bytes.
 */
export function poisonPoolTakes(): () => void {
  // Called with each pool as `this`, and put back by the restore.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const take = ChunkPool.prototype.take;
  ChunkPool.prototype.take = function (this: ChunkPool) {
    return take.call(this).fill(0xee);
  };
  return () => {
    ChunkPool.prototype.take = take;
  };
}
