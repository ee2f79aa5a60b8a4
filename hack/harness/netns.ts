/**
 * A bandwidth-limited host: a network namespace joined to this one by a veth
 * pair, with `tc tbf` on both ends, so what runs inside it (the upstream
 * registry in the upstream benchmark) is reached at a real link's rate and
 * not at loopback's. Needs root (ip netns, tc). Namespaces are named after the
 * process that made them; one whose process is gone is removed by the next
 * createThrottledHost, so a crashed run leaves nothing behind for long.
 */
import { processStartTime, run } from './procs.ts';

export interface ThrottledHostInit {
  /** The link's rate in both directions, in Mbit/s. */
  rateMbit: number;
}

export interface ThrottledHost {
  /** The namespace's name (`ip netns exec NAME ...`). */
  readonly name: string;
  /** The address inside the namespace: where its servers listen. */
  readonly ip: string;
  /** This namespace's end of the link. */
  readonly hostIp: string;
  /** The command prefix that runs a program inside the namespace. */
  readonly exec: readonly string[];
  /** Sets the link's rate, both ways. */
  setRate(rateMbit: number): Promise<void>;
  /** Removes the namespace and its link; processes inside must be stopped first. */
  remove(): Promise<void>;
}

const PREFIX = 'shoal-';
let made = 0;

export async function createThrottledHost(init: ThrottledHostInit): Promise<ThrottledHost> {
  checkRate(init.rateMbit);
  await removeLeftoverNamespaces();
  const n = made++;
  // The start time with the pid: a leftover is told from a live run even after its pid is reused.
  const name = `${PREFIX}${process.pid}-${processStartTime(process.pid) ?? '0'}-${n}`;
  // Interface names are at most 15 characters; the pid keeps parallel runs apart.
  const outside = `sh${process.pid}o${n}`.slice(0, 15);
  const inside = `sh${process.pid}i${n}`.slice(0, 15);
  // A /30 per host from 10.213.0.0/16, from the pid and the count: unique among this machine's live runs in practice.
  const subnet = ((process.pid * 8 + n) % 16_384) * 4;
  const [hostIp, ip] = [subnet + 1, subnet + 2].map((a) => `10.213.${a >> 8}.${a & 255}`) as [string, string];
  const inNs = (...args: string[]) => ip_(['netns', 'exec', name, ...args]);
  const tbf = (verb: 'add' | 'change', dev: string, rateMbit: number) => ['qdisc', verb, 'dev', dev, 'root', 'tbf', 'rate', `${rateMbit}mbit`, 'burst', '256kb', 'latency', '500ms'];
  const throttle = async (verb: 'add' | 'change', rateMbit: number): Promise<void> => {
    await run('tc', tbf(verb, outside, rateMbit));
    await inNs('tc', ...tbf(verb, inside, rateMbit));
  };
  const remove = async (): Promise<void> => {
    await ip_(['netns', 'del', name]).catch(() => {});
    // Deleting the namespace deletes both ends of the pair; this only covers a half-made one.
    await ip_(['link', 'del', outside]).catch(() => {});
  };
  try {
    await ip_(['netns', 'add', name]);
    await ip_(['link', 'add', outside, 'type', 'veth', 'peer', 'name', inside]);
    await ip_(['link', 'set', inside, 'netns', name]);
    await ip_(['addr', 'add', `${hostIp}/30`, 'dev', outside]);
    await ip_(['link', 'set', outside, 'up']);
    await inNs('ip', 'addr', 'add', `${ip}/30`, 'dev', inside);
    await inNs('ip', 'link', 'set', inside, 'up');
    await inNs('ip', 'link', 'set', 'lo', 'up');
    await throttle('add', init.rateMbit);
  } catch (err) {
    await remove();
    throw new Error(`could not make a throttled host (needs root, ip and tc): ${(err as Error).message.trim()}`, { cause: err });
  }
  const setRate = async (rateMbit: number): Promise<void> => {
    checkRate(rateMbit);
    await throttle('change', rateMbit);
  };
  return { name, ip, hostIp, exec: ['ip', 'netns', 'exec', name], setRate, remove };
}

function checkRate(rateMbit: number): void {
  if (!Number.isFinite(rateMbit) || rateMbit <= 0) throw new RangeError(`rateMbit ${rateMbit} is not a rate`);
}

function ip_(args: string[]): Promise<{ stdout: Buffer; stderr: string }> {
  return run('ip', args, { timeoutMs: 10_000 });
}

/** Removes namespaces of ours whose process is gone (the same pid and start time no longer run). */
async function removeLeftoverNamespaces(): Promise<void> {
  const { stdout } = await ip_(['netns', 'list']);
  for (const line of stdout.toString('utf8').split('\n')) {
    const m = /^shoal-(\d+)-(\d+)-\d+/.exec(line);
    if (m === null || processStartTime(Number(m[1])) === m[2]) continue;
    await ip_(['netns', 'del', m[0]]).catch(() => {});
  }
}
