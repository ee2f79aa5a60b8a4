/**
 * The reference server: Debian's nginx (nginx-light) serving files from one
 * directory with sendfile, the fastest plain way Linux has to put a file on a
 * socket. One worker, no access log, everything (config, pid, temp dirs) in
 * its own directory; runs in the foreground under the harness's process
 * helpers, so teardown and leftover cleanup treat it like the other processes.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, startProc, waitForHttp, type Proc } from '../harness/procs.ts';

export interface NginxInit {
  /** Directory for config, pid, temp dirs and log; created if missing. */
  dir: string;
  /** Loopback address to listen on. */
  ip: string;
  /** Directory served as the document root. */
  root: string;
  /** A file under root that answers 200 once nginx is up. */
  readyPath: string;
}

export interface Nginx {
  /** `http://IP:PORT` */
  readonly url: string;
  /** The master process; its workers are its children. */
  readonly pid: number;
  stop(): Promise<void>;
}

export async function startNginx(init: NginxInit): Promise<Nginx> {
  const port = await freePort(init.ip);
  const temp = join(init.dir, 'temp');
  mkdirSync(temp, { recursive: true });
  const configPath = join(init.dir, 'nginx.conf');
  writeFileSync(configPath, nginxConf({ ...init, port, temp }));
  const url = `http://${init.ip}:${port}`;
  // -e: the error log goes to stderr (the harness log) from the start, before the config is read.
  const proc: Proc = await startProc(
    { name: 'nginx', dir: init.dir, command: 'nginx', args: ['-p', init.dir, '-c', configPath, '-e', 'stderr'] },
    (p) => waitForHttp(`${url}/${init.readyPath}`, { what: `nginx on ${init.ip}:${port}`, proc: p, timeoutMs: 15_000 }),
  );
  return { url, pid: proc.pid, stop: () => proc.stop() };
}

function nginxConf(v: NginxInit & { port: number; temp: string }): string {
  // As root, workers would drop to `nobody`, which cannot read containerd's content directory.
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  // The pid file is not named *.pid: the harness's own pid files (JSON) use that suffix.
  return `daemon off;
worker_processes 1;
${user}pid ${join(v.dir, 'nginx-master-pid')};
error_log stderr warn;

events {
  worker_connections 64;
}

http {
  default_type application/octet-stream;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65s;
  # The HEAD series runs thousands of requests on one connection (the default closes after 1000).
  keepalive_requests 1000000;
  client_body_temp_path ${join(v.temp, 'body')};
  proxy_temp_path ${join(v.temp, 'proxy')};
  fastcgi_temp_path ${join(v.temp, 'fastcgi')};
  uwsgi_temp_path ${join(v.temp, 'uwsgi')};
  scgi_temp_path ${join(v.temp, 'scgi')};

  server {
    listen ${v.ip}:${v.port};
    root ${v.root};
  }
}
`;
}
