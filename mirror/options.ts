/** The mirror's subcommands and their flags, with defaults in one place. */
import { flag } from '../shared/cli.ts';
import { parseListenAddress } from '../shared/listen-address.ts';
import { LOG_LEVELS, type LogLevel } from '../shared/log.ts';
import { peerFlags } from '../shared/p2p/flags.ts';
import { parseMirroredRegistries } from '../shared/registries.ts';

function parseLogLevel(raw: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(raw)) throw new Error(`"${raw}" is not one of ${LOG_LEVELS.join(', ')}`);
  return raw as LogLevel;
}

const mirroredRegistries = (emptyMeans: string) =>
  flag.custom(`Comma list of registries: host[:port] (https upstream) or http://host:port (plain http); empty: ${emptyMeans}.`, 'LIST', parseMirroredRegistries, '');
const logLevel = flag.custom(`Lowest log level written: ${LOG_LEVELS.join(', ')}.`, 'LEVEL', parseLogLevel, 'info');

export const serveFlags = {
  registryAddr: flag.custom('Address of the OCI registry API.', 'ADDR', parseListenAddress, ':5000'),
  metricsAddr: flag.custom('Address of /metrics, /healthz and /readyz.', 'ADDR', parseListenAddress, ':9090'),
  containerdSock: flag.string('containerd gRPC socket.', '/run/containerd/containerd.sock', 'PATH'),
  containerdNamespace: flag.string('containerd namespace whose images are served.', 'k8s.io', 'NAME'),
  containerdContentPath: flag.string(
    "containerd's content directory; when readable, blobs are read from its files, else through Content.Read (empty: always Content.Read).",
    '/var/lib/containerd/io.containerd.content.v1.content',
    'PATH',
  ),
  contentCheckTtl: flag.duration(
    "How long a content file that matched its digest is trusted for later reads of the same file; 0: every read waits for a pass over the file (reads at the same time share one).",
    '5m',
  ),
  mirroredRegistries: mirroredRegistries('every registry'),
  dataDir: flag.string("Directory for the mirror's own state: its peer identity key and the spool of upstream downloads.", '/var/lib/shoal', 'PATH'),
  logLevel,
  ...peerFlags(),
  advertiseTtl: flag.duration('How long a provider record lives; records are re-provided before then.', '10m'),
  resolveTimeout: flag.duration('How long a local miss waits for the first peer that has the content.', '20ms'),
  resolveRetries: flag.int('How many peers a miss tries before giving up.', 3, 1, 20),
  peerRegistryPort: flag.int("The port of other nodes' mirrors (the registry port, the same on every node).", 5000, 1, 65535),
  peerIdleTimeout: flag.duration('A peer that sends no bytes for this long is cut, and the next peer resumes.', '5s'),
  upstreamFallback: flag.bool('Fetch what neither this node nor its peers hold from the mirrored registry itself, one download per blob for the cluster; false: answer 404 and let containerd go upstream.', true),
  // 10 GiB: room for a few large images in flight at once; complete files leave within seconds, so it is not a cache.
  spoolMaxBytes: flag.int('Most bytes of upstream downloads held at once under <data-dir>/spool; a blob that does not fit is left to containerd (404).', 10 * 1024 ** 3, 0),
  registryCredentialsFile: flag.string("This node's pull credentials for upstream, dockerconfigjson (or dockercfg) content; empty: anonymous.", '', 'PATH'),
  upstreamIdleTimeout: flag.duration('An upstream registry that sends no bytes for this long is cut, and the download resumes from where it stopped.', '10s'),
};

export const configureFlags = {
  containerdRegistryConfigPath: flag.string("containerd's registry config_path (certs.d).", '/etc/containerd/certs.d', 'PATH'),
  mirroredRegistries: mirroredRegistries('_default, every registry'),
  mirrorTarget: flag.string('URL containerd uses to reach this node\'s mirror, e.g. http://NODE_IP:5000.', undefined, 'URL'),
  prependExisting: flag.bool('Keep the host entries already configured, after the mirror.', false),
  logLevel,
};

// cleanup accepts configure's flags, so one set of args or env serves both; it
// restores every directory configure wrote, whatever the list says now.
const unusedByCleanup = 'Accepted so configure\'s flags and env serve cleanup too; not used: cleanup restores every directory configure wrote.';
export const cleanupFlags = {
  containerdRegistryConfigPath: configureFlags.containerdRegistryConfigPath,
  mirroredRegistries: flag.custom(unusedByCleanup, 'LIST', parseMirroredRegistries, ''),
  mirrorTarget: flag.string(unusedByCleanup, '', 'URL'),
  prependExisting: flag.bool(unusedByCleanup, false),
  logLevel,
};

export const COMMANDS = {
  serve: { summary: 'Serve pulls from this node\'s containerd content store (default).', flags: serveFlags },
  configure: { summary: 'Write containerd hosts.toml files that send pulls to this mirror.', flags: configureFlags },
  cleanup: { summary: 'Put back the containerd configuration that configure replaced.', flags: cleanupFlags },
} as const;

export type CommandName = keyof typeof COMMANDS;
