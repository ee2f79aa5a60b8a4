/** Listen addresses: `:5000` (every interface), `127.0.0.1:5000`, `[::1]:5000`. */

export interface ListenAddress {
  /** undefined: every interface. */
  readonly host: string | undefined;
  readonly port: number;
}

export function parseListenAddress(raw: string): ListenAddress {
  const m = raw.match(/^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):([0-9]{1,5})$/);
  if (!m) throw new Error(`"${raw}" is not an address (e.g. :5000, 127.0.0.1:5000, [::1]:5000)`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`port ${port} is out of range`);
  const host = m[1] ?? m[2];
  return { host: host === '' ? undefined : host, port };
}

export function formatListenAddress(addr: ListenAddress): string {
  if (addr.host === undefined) return `:${addr.port}`;
  return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}
