/** Starting and stopping node:http servers on parsed listen addresses. */
import type { Server } from 'node:http';
import type { AddressInfo, Server as TcpServer } from 'node:net';
import type { ListenAddress } from './listen-address.ts';

/** Listens and resolves with the bound port (useful when the port was 0). Any TCP server, HTTP's included. */
export function listen(server: TcpServer, addr: ListenAddress): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: addr.host, port: addr.port }, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Stops accepting, lets requests in flight finish for up to graceMs, then drops what is left. */
export function close(server: Server, graceMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}
