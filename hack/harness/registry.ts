/**
 * The upstream: a real CNCF distribution 2.8 (`docker-registry` from Debian) on
 * a loopback port, optionally behind htpasswd basic auth or token (Bearer) auth. Its access log (combined
 * format, on stdout) goes to the process log and is parsed by requests(), so tests
 * and benchmarks can see what reached upstream and how many bytes it served.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { join } from 'node:path';
import { freePort, run, startProc, waitForHttp, waitUntil, type Proc } from './procs.ts';

export interface RegistryInit {
  /** Directory for config, storage, htpasswd file and log; created if missing. */
  dir: string;
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Port (default: a free one). */
  port?: number;
  /** Require basic auth with this user (bcrypt htpasswd file). */
  htpasswd?: { user: string; password: string };
  /** Require Bearer tokens from a token server instead (distribution's `auth.token`). */
  token?: RegistryTokenAuth;
  /** Runs the registry through this command, which must exec its arguments (e.g. `ip netns exec NAME`: a throttled host, with `host` its address). Default none. */
  commandPrefix?: readonly string[];
  /** Serve HTTPS with this certificate and key (PEM); `ca` (PEM) is what clients trust. Default plain HTTP. */
  tls?: { cert: string; key: string; ca: string };
}

/** distribution's `auth.token`: the registry checks each JWT's signature (x5c chain to rootCertBundle), issuer, audience (= service), expiry and `access` claim. */
export interface RegistryTokenAuth {
  /** Token server URL sent in the challenge. */
  realm: string;
  service: string;
  issuer: string;
  /** PEM file of the certificates whose keys may sign tokens. */
  rootCertBundle: string;
}

/** One line of the registry's access log. */
export interface RegistryRequest {
  method: string;
  /** Path and query as sent, e.g. `/v2/app/blobs/sha256:...`. */
  path: string;
  status: number;
  /** Response body bytes written (0 for HEAD). */
  bytes: number;
  /** Client address. 127.0.0.1 for every local client unless it binds its source address (nodes' IPs are not used by default). */
  remoteIp: string;
  userAgent: string;
}

export interface Registry {
  /** `127.0.0.1:PORT`: the registry name in image references. */
  readonly host: string;
  /** `http://127.0.0.1:PORT` (`https://` with `tls`) */
  readonly url: string;
  readonly dir: string;
  readonly credentials: { user: string; password: string } | undefined;
  /** Starts again on the same storage and port. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Every request logged so far (across restarts), oldest first. */
  requests(): RegistryRequest[];
  /**
   * The requests logged after the first `from`, once there are `count` of
   * them: the registry logs a request after its answer has gone out, so a
   * client that has read the answer may be ahead of the log.
   */
  requestsSince(from: number, count: number): Promise<RegistryRequest[]>;
  readonly logPath: string;
}

const NAME = 'registry';

export async function startRegistry(init: RegistryInit): Promise<Registry> {
  const ip = init.host ?? '127.0.0.1';
  // In another namespace no port here says what is free there; any fixed one is (the namespace is new).
  const port = init.port ?? (init.commandPrefix ? 5000 : await freePort(ip));
  mkdirSync(join(init.dir, 'storage'), { recursive: true });
  if (init.htpasswd && init.token) throw new Error('registry: htpasswd and token auth exclude each other');
  const auth = init.htpasswd ? await writeHtpasswd(init.dir, init.htpasswd) : init.token ? tokenAuthConfig(init.token) : '';
  const tls = init.tls === undefined ? '' : writeTlsConfig(init.dir, init.tls);
  const configPath = join(init.dir, 'config.yml');
  // Fixed http.secret: upload state survives a restart. accesslog is on by default; kept explicit.
  writeFileSync(
    configPath,
    `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${join(init.dir, 'storage')}
  delete:
    enabled: true
http:
  addr: ${ip}:${port}
  secret: shoal-test-secret
${tls}${auth}`,
  );

  const host = `${ip}:${port}`;
  const url = `${init.tls === undefined ? 'http' : 'https'}://${host}`;
  let proc: Proc | undefined;

  const start = async (): Promise<void> => {
    if (proc?.running()) return;
    // /v2/ answers 401 when auth is on; either way it is serving.
    const [command = 'docker-registry', ...args] = [...(init.commandPrefix ?? []), 'docker-registry', 'serve', configPath];
    const ready = { what: `registry on ${host}`, status: init.htpasswd || init.token ? 401 : 200, timeoutMs: 15_000 };
    proc = await startProc({ name: NAME, dir: init.dir, command, args }, (p) =>
      init.tls === undefined ? waitForHttp(`${url}/v2/`, { ...ready, proc: p }) : waitUntil(async () => (await httpsStatus(`${url}/v2/`, init.tls!.ca)) === ready.status, { ...ready, proc: p }),
    );
  };
  await start();

  const logPath = join(init.dir, `${NAME}.log`);
  return {
    host,
    url,
    dir: init.dir,
    credentials: init.htpasswd,
    start,
    stop: async () => {
      await proc?.stop();
    },
    requests: () => parseAccessLog(readFileSync(logPath, 'utf8')),
    requestsSince: async (from, count) => {
      let since: RegistryRequest[] = [];
      await waitUntil(
        () => {
          since = parseAccessLog(readFileSync(logPath, 'utf8')).slice(from);
          return Promise.resolve(since.length >= count);
        },
        { what: `${count} registry log lines after the first ${from}`, timeoutMs: 5000, intervalMs: 10 },
      );
      return since;
    },
    logPath,
  };
}

/** distribution's `http.tls`, the certificate and key written beside the config. */
function writeTlsConfig(dir: string, tls: { cert: string; key: string }): string {
  writeFileSync(join(dir, 'tls.crt'), tls.cert);
  writeFileSync(join(dir, 'tls.key'), tls.key, { mode: 0o600 });
  return `  tls:
    certificate: ${join(dir, 'tls.crt')}
    key: ${join(dir, 'tls.key')}
`;
}

/**
 * The status of a GET over HTTPS trusting `ca` (fetch cannot be given a CA).
 * Only whether it serves: the certificate may name the host otherwise than `url` does.
 */
function httpsStatus(url: string, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsGet(url, { ca, timeout: 2000, checkServerIdentity: () => undefined }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

async function writeHtpasswd(dir: string, cred: { user: string; password: string }): Promise<string> {
  // distribution accepts bcrypt entries only.
  const { stdout } = await run('htpasswd', ['-Bbn', cred.user, cred.password]);
  const path = join(dir, 'htpasswd');
  writeFileSync(path, stdout.toString('utf8').trim() + '\n');
  return `auth:
  htpasswd:
    realm: shoal-test
    path: ${path}
`;
}

function tokenAuthConfig(token: RegistryTokenAuth): string {
  return `auth:
  token:
    realm: ${token.realm}
    service: ${token.service}
    issuer: ${token.issuer}
    rootcertbundle: ${token.rootCertBundle}
`;
}

// 127.0.0.1 - user [22/Nov/2026:16:28:53 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
// (The user field stays "-" even with basic auth: gorilla's combined log reads only URL userinfo.)
const ACCESS_RE = /^(\S+) \S+ \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-) "[^"]*" "([^"]*)"$/;

export function parseAccessLog(text: string): RegistryRequest[] {
  const out: RegistryRequest[] = [];
  for (const line of text.split('\n')) {
    const m = ACCESS_RE.exec(line);
    if (!m) continue;
    const [, remoteIp = '', method = '', path = '', status = '0', bytes = '-', userAgent = ''] = m;
    out.push({ method, path, status: Number(status), bytes: bytes === '-' ? 0 : Number(bytes), remoteIp, userAgent });
  }
  return out;
}
