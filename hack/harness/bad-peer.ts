/** Starts hack/harness/bad-peer-main.ts as a process of the run, and reads what it logged. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { silentLogger } from '../../shared/log.ts';
import { loadOrCreatePeerKey } from '../../shared/p2p/identity.ts';
import { startProc, waitUntil, type Proc } from './procs.ts';
import { REPO_ROOT } from './runs.ts';

export interface BadPeerInit {
  mode: 'corrupt' | 'stall';
  dir: string;
  ip: string;
  /** Must be the cluster's registry port: peers are dialed at host:--peer-registry-port. */
  registryPort: number;
  routerPort: number;
  bootstrapPeers: string[];
  /** Omit to try joining without the network key. */
  networkKeyFile?: string;
  /** Digest → a file with the blob's real bytes (their length is what it claims). */
  blobs: Record<string, string>;
}

export interface BadPeer {
  readonly proc: Proc;
  /** Requests it served, from its log. */
  requests(): { method: string; url: string; range?: string; served: boolean }[];
  /** Whether a provide of its keys reached any peer (false: nobody took its records). */
  reachedPeers(): boolean;
  stop(): Promise<void>;
}

/** The peer id a bad peer started with `dir` will have: its identity is made now, before it starts. */
export async function badPeerId(dir: string): Promise<string> {
  return peerIdFromPrivateKey(await loadOrCreatePeerKey(join(dir, 'data'), silentLogger)).toString();
}

export async function startBadPeer(init: BadPeerInit): Promise<BadPeer> {
  const args = [
    join(REPO_ROOT, 'hack/harness/bad-peer-main.ts'),
    init.mode,
    init.ip,
    String(init.registryPort),
    String(init.routerPort),
    join(init.dir, 'data'),
    init.bootstrapPeers.join(','),
    init.networkKeyFile ?? '-',
    ...Object.entries(init.blobs).map(([digest, file]) => `${digest}=${file}`),
  ];
  const lines = (logPath: string) =>
    readFileSync(logPath, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const proc = await startProc({ name: 'bad-peer', dir: init.dir, command: join(REPO_ROOT, 'node_modules/.bin/node'), args, cwd: REPO_ROOT }, (p) =>
    waitUntil(async () => Promise.resolve(lines(p.logPath).some((l) => l.msg === 'advertised')), { what: 'bad peer advertised', proc: p, timeoutMs: 30_000 }),
  );
  return {
    proc,
    requests: () => lines(proc.logPath).filter((l) => l.msg === 'request') as unknown as ReturnType<BadPeer['requests']>,
    reachedPeers: () => {
      const advertised = lines(proc.logPath).find((l) => l.msg === 'advertised') as { stats?: { providesSucceeded?: number } } | undefined;
      return (advertised?.stats?.providesSucceeded ?? 0) > 0;
    },
    stop: () => proc.stop(2000),
  };
}
