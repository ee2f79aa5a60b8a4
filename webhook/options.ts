/** The webhook's flags, with defaults in one place, and the checks that span several flags. */
import { flag, UsageError, type FlagValues } from '../shared/cli.ts';
import { parseListenAddress } from '../shared/listen-address.ts';
import { LOG_LEVELS, type LogLevel } from '../shared/log.ts';
import { peerFlags } from '../shared/p2p/flags.ts';

function parseLogLevel(raw: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(raw)) throw new Error(`"${raw}" is not one of ${LOG_LEVELS.join(', ')}`);
  return raw as LogLevel;
}

function parseRegex(raw: string): RegExp {
  try {
    return new RegExp(raw);
  } catch (err) {
    throw new Error(`"${raw}" is not a regular expression: ${(err as Error).message}`);
  }
}

// host[:port] as image references name registries: DNS labels, an IPv4 address or a bracketed IPv6 address.
const REGISTRY_HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

function parseRegistryHosts(raw: string): string[] {
  const hosts = raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  for (const host of hosts) {
    if (!REGISTRY_HOST_RE.test(host)) throw new Error(`"${host}" is not a registry host[:port] as image references name it (no scheme, no path)`);
  }
  return hosts.map((h) => h.toLowerCase());
}

/** The API server gives a webhook call at most 30 s (timeoutSeconds); the budget must end before the call does. */
const MAX_BUDGET_MS = 29_000;

export const webhookFlags = {
  addr: flag.custom('HTTPS address of POST /mutate (AdmissionReview v1).', 'ADDR', parseListenAddress, ':8443'),
  metricsAddr: flag.custom('Address of /metrics, /healthz and /readyz (plain http).', 'ADDR', parseListenAddress, ':9091'),
  tlsCertFile: flag.string('Serving certificate (PEM), read again when it changes (e.g. a cert-manager Secret). Needs --tls-key-file.', '', 'PATH'),
  tlsKeyFile: flag.string('Private key of --tls-cert-file (PEM).', '', 'PATH'),
  tlsReloadInterval: flag.duration('How often the certificate files are read again, besides change events.', '1m'),
  selfSigned: flag.bool("Make a CA and a serving certificate for the Service at start, and put the CA into --webhook-config-name's caBundle.", false),
  serviceName: flag.string("The webhook's Service: the self-signed certificate's DNS names.", 'shoal-webhook', 'NAME'),
  serviceNamespace: flag.string("The Service's namespace.", 'shoal-system', 'NAME'),
  webhookConfigName: flag.string('MutatingWebhookConfiguration whose caBundle --self-signed fills in.', 'shoal', 'NAME'),
  kubeconfig: flag.string('kubeconfig for the Kubernetes API (empty: the in-cluster config when running in a pod; else none, and only pod annotations are read).', '', 'PATH'),
  registryCredentialsFile: flag.string('Docker config JSON ({"auths": ...}) with registry credentials tried after the pod\'s own (empty: none).', '', 'PATH'),
  plainHttpRegistries: flag.custom('Comma list of registries (host:port, as image references name them) reached over plain http.', 'LIST', parseRegistryHosts, ''),
  mutableTags: flag.custom('Tags that move (regular expression): resolved upstream before peers, since a peer may hold an older image.', 'REGEX', parseRegex, '^latest$'),
  cacheTtl: flag.duration('How long a resolved tag is remembered.', '60s'),
  resolveBudget: flag.duration("Time one review may spend resolving images; what is not resolved by then stays unpinned. Keep it under the configuration's timeoutSeconds.", '2s'),
  ...peerFlags(),
  peerRegistryPort: flag.int("The port of the nodes' mirrors (their registry port, the same on every node).", 5000, 1, 65535),
  logLevel: flag.custom(`Lowest log level written: ${LOG_LEVELS.join(', ')}.`, 'LEVEL', parseLogLevel, 'info'),
};

export type WebhookOptions = FlagValues<typeof webhookFlags>;

/** Checks between flags; throws UsageError (exit 2). */
export function checkWebhookOptions(options: WebhookOptions): void {
  const files = options.tlsCertFile !== '' || options.tlsKeyFile !== '';
  if (options.tlsCertFile === '' && options.tlsKeyFile !== '') throw new UsageError('--tls-key-file needs --tls-cert-file');
  if (options.tlsCertFile !== '' && options.tlsKeyFile === '') throw new UsageError('--tls-cert-file needs --tls-key-file');
  if (files && options.selfSigned) throw new UsageError('give either --tls-cert-file and --tls-key-file, or --self-signed, not both');
  if (!files && !options.selfSigned) throw new UsageError('the webhook serves HTTPS only: give --tls-cert-file and --tls-key-file, or --self-signed');
  if (options.resolveBudget <= 0 || options.resolveBudget > MAX_BUDGET_MS) throw new UsageError(`--resolve-budget must be more than 0 and at most ${MAX_BUDGET_MS / 1000}s`);
  if (options.tlsReloadInterval < 1000) throw new UsageError('--tls-reload-interval must be at least 1s');
}
