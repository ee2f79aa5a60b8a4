/** Waiting for the signal that ends a server process (kubelet sends SIGTERM; a terminal, SIGINT). */
import type { Logger } from './log.ts';

export function shutdownSignal(logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    const stop = (signal: string) => {
      logger.info('shutting down', { signal });
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
