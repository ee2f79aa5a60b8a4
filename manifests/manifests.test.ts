/**
 * The kustomize base as a cluster would get it: rendered by `kubectl kustomize`,
 * every object checked against the Kubernetes schema, and the DaemonSet checked
 * against the mirror binary itself (its --help, and real runs of configure and
 * cleanup with the containers' own arguments), so manifests and flags cannot drift.
 * The README's network key command is run too, and its key read by the mirror's parser.
 * The webhook's objects are checked in webhook.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { ISecret } from 'kubernetes-models/v1/Secret';
import type { IService } from 'kubernetes-models/v1/Service';
import { parseFlags, type Flags } from '../shared/cli.ts';
import { parseListenAddress } from '../shared/listen-address.ts';
import { formatNetworkKey, generateNetworkKey, parseNetworkKey } from '../shared/p2p/network-key.ts';
import { COMMANDS, type CommandName } from '../mirror/options.ts';
import { bytes, checkCertManager, container, expand, find, helpFlags, NODE_IP, readContainerArgs, render, ROOT, run, schemaOf, validateAll, type HelpFlag, type KubeObject } from './testing.ts';

const MAIN = join(ROOT, 'mirror', 'main.ts');

function podSpec(ds: IDaemonSet): IPodSpec {
  const spec = ds.spec?.template.spec;
  assert.ok(spec, `${ds.metadata?.name} has no pod spec`);
  return spec;
}

/** How a container runs the mirror: its subcommand, flags and SHOAL_* environment. */
interface Invocation {
  readonly command: CommandName;
  /** Flag name to raw value ("true" for a bare boolean). */
  readonly flags: Map<string, string>;
  readonly env: Map<string, string>;
}

function invocation(c: IContainer, help: ReadonlyMap<CommandName, Map<string, HelpFlag>>, configMaps: readonly IConfigMap[]): Invocation {
  assert.deepEqual(c.command, ['node', 'mirror/main.ts'], `${c.name} does not run the mirror`);
  const [command, ...args] = (c.args ?? []).map((a) => expand(a, c));
  assert.ok(command !== undefined && command in COMMANDS, `${c.name}: "${command}" is not a mirror command`);
  const known = help.get(command as CommandName);
  assert.ok(known, `no --help read for ${command}`);
  const { flags, env } = readContainerArgs(c, args, known, configMaps, command);
  // The values too, with the mirror's own parsers (a bad address or list fails here).
  const values = (COMMANDS[command as CommandName].flags as Flags);
  assert.doesNotThrow(() => parseFlags(values, args, Object.fromEntries(env)), `${c.name}: the mirror refuses these arguments`);
  return { command: command as CommandName, flags, env };
}

/** Runs the mirror as the container would, with one flag's path replaced by a scratch directory. */
async function runAsContainer(inv: Invocation, flag: string, path: string, env: Record<string, string> = {}): Promise<string> {
  const args = [...inv.flags].map(([k, v]) => `--${k}=${k === flag ? path : v}`);
  const { stdout } = await run(process.execPath, [MAIN, inv.command, ...args], { env: { PATH: process.env.PATH, ...Object.fromEntries(inv.env), ...env } });
  return stdout;
}

function hostPathOf(spec: IPodSpec, c: IContainer, mountPath: string): { path: string; type?: string; readOnly: boolean } {
  const mount = c.volumeMounts?.find((m) => m.mountPath === mountPath);
  assert.ok(mount, `${c.name} does not mount ${mountPath}`);
  const volume = spec.volumes?.find((v) => v.name === mount.name);
  assert.ok(volume?.hostPath, `${c.name}: volume ${mount.name} at ${mountPath} is not a hostPath`);
  return { path: volume.hostPath.path, type: volume.hostPath.type, readOnly: mount.readOnly === true };
}

const CERTS_D = '/etc/containerd/certs.d';
const SOCKET = '/run/containerd/containerd.sock';
const CONTENT = '/var/lib/containerd/io.containerd.content.v1.content';
const DATA = '/var/lib/shoal';
const NETWORK_KEY_SECRET = 'shoal-network-key';

describe('manifests/ (kustomize base)', function () {
  let base: KubeObject[];
  let cleanupObjects: KubeObject[];
  const help = new Map<CommandName, Map<string, HelpFlag>>();
  let ds: IDaemonSet;
  let spec: IPodSpec;
  let configure: IContainer;
  let mirror: IContainer;
  let configMaps: IConfigMap[];
  let tmp: string;

  before(async function () {
    [base, cleanupObjects] = await Promise.all([render('manifests'), render('manifests/cleanup')]);
    for (const command of Object.keys(COMMANDS) as CommandName[]) help.set(command, await helpFlags([MAIN, command]));
    ds = find<IDaemonSet>(base, 'DaemonSet', 'shoal-mirror');
    spec = podSpec(ds);
    configure = container(spec.initContainers, 'configure');
    mirror = container(spec.containers, 'mirror');
    configMaps = base.filter((o) => o.kind === 'ConfigMap') as IConfigMap[];
  });
  beforeEach(async function () {
    tmp = await mkdtemp(join(tmpdir(), 'shoal-manifests-'));
  });
  afterEach(async function () {
    await rm(tmp, { recursive: true, force: true });
  });

  it('renders the mirror and the webhook, each object valid against the Kubernetes schema (cert-manager\'s against its own)', async function () {
    const validated = await validateAll(base);
    assert.equal(validated.length, base.length);
    // No Secret: the network key is created per cluster, never committed; cert-manager makes the TLS ones.
    assert.deepEqual(base.map((o) => o.kind).sort(), [
      'Certificate', 'Certificate', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'ConfigMap', 'DaemonSet', 'Deployment',
      'Issuer', 'Issuer', 'MutatingWebhookConfiguration', 'Namespace', 'PodDisruptionBudget', 'Service', 'Service', 'ServiceAccount', 'ServiceAccount',
    ]);
    const clusterScoped = ['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration'];
    for (const o of base) assert.equal(o.metadata.namespace, clusterScoped.includes(o.kind) ? undefined : 'shoal-system', `${o.kind}/${o.metadata.name}`);
    // hostNetwork and hostPath are refused below the privileged Pod Security level.
    const ns = find<{ metadata: { labels?: Record<string, string> } }>(base, 'Namespace', 'shoal-system');
    assert.equal(ns.metadata.labels?.['pod-security.kubernetes.io/enforce'], 'privileged');
  });

  it('the schema check does reject a broken object', async function () {
    const broken = structuredClone(ds) as unknown as KubeObject & IDaemonSet;
    podSpec(broken).containers[0]!.ports![0]!.containerPort = 'five thousand' as unknown as number;
    const Model = await schemaOf(broken);
    assert.throws(() => new Model(broken).validate(), /containerPort must be integer/);
  });

  it('the cert-manager check does reject a broken Certificate or Issuer', function () {
    const certificate = find<KubeObject & { spec: Record<string, unknown> }>(base, 'Certificate', 'shoal-webhook-ca');
    assert.doesNotThrow(() => checkCertManager(certificate));
    const misspelt = structuredClone(certificate);
    misspelt.spec.dnsName = misspelt.spec.dnsNames;
    assert.throws(() => checkCertManager(misspelt), /spec\.dnsName is not a field/);
    const noSecret = structuredClone(certificate);
    delete noSecret.spec.secretName;
    assert.throws(() => checkCertManager(noSecret), /spec\.secretName is required/);
    const badUsage = structuredClone(certificate);
    badUsage.spec.usages = ['server-auth'];
    assert.throws(() => checkCertManager(badUsage), /"server-auth" is not a key usage/);
    const issuer = find<KubeObject & { spec: Record<string, unknown> }>(base, 'Issuer', 'shoal-webhook-ca');
    assert.doesNotThrow(() => checkCertManager(issuer));
    const twoKinds = structuredClone(issuer);
    twoKinds.spec.selfSigned = {};
    assert.throws(() => checkCertManager(twoKinds), /exactly one of/);
  });

  it('runs configure in the init container and serve in the main container, with flags and env the mirror accepts', function () {
    assert.equal(invocation(configure, help, configMaps).command, 'configure');
    assert.equal(invocation(mirror, help, configMaps).command, 'serve');
    assert.equal(spec.initContainers?.length, 1);
    assert.equal(spec.containers.length, 1);
  });

  it('gives both containers the registry list and log level from the ConfigMap', function () {
    const cm = find<IConfigMap>(base, 'ConfigMap', 'shoal-mirror-config');
    assert.deepEqual(Object.keys(cm.data ?? {}).sort(), ['SHOAL_LOG_LEVEL', 'SHOAL_MIRRORED_REGISTRIES']);
    assert.equal(cm.data?.SHOAL_MIRRORED_REGISTRIES, 'docker.io,ghcr.io,quay.io,registry.k8s.io');
    for (const c of [configure, mirror]) {
      assert.equal(invocation(c, help, configMaps).env.get('SHOAL_MIRRORED_REGISTRIES'), cm.data?.SHOAL_MIRRORED_REGISTRIES, c.name);
    }
  });

  it('serves on NODE_IP at the port configure points containerd at, on the host network', function () {
    assert.equal(spec.hostNetwork, true);
    assert.equal(spec.dnsPolicy, 'ClusterFirstWithHostNet');
    const nodeIp = mirror.env?.find((e) => e.name === 'NODE_IP');
    assert.equal(nodeIp?.valueFrom?.fieldRef?.fieldPath, 'status.hostIP');
    const serve = invocation(mirror, help, configMaps);
    const target = new URL(invocation(configure, help, configMaps).flags.get('mirror-target') ?? assert.fail('configure has no --mirror-target'));
    assert.equal(target.protocol, 'http:');
    assert.equal(serve.flags.get('registry-addr'), `${NODE_IP}:${target.port}`);
    assert.equal(serve.flags.get('metrics-addr'), `${NODE_IP}:9090`);
    const ports = new Map(mirror.ports?.map((p) => [p.name, p]));
    assert.equal(ports.get('registry')?.containerPort, Number(target.port));
    assert.equal(ports.get('metrics')?.containerPort, 9090);
    for (const p of ports.values()) assert.equal(p.hostPort, p.containerPort, `port ${p.name}`);
  });

  it('joins the peer network through a headless Service that publishes every mirror pod, ready or not', function () {
    const svc = find<IService>(base, 'Service', 'shoal-mirror-peers');
    assert.equal(svc.spec?.clusterIP, 'None');
    // A new pod is ready only once it has a peer, so it must see pods that are not ready yet.
    assert.equal(svc.spec?.publishNotReadyAddresses, true);
    // Exactly the DaemonSet's pods: not the cleanup DaemonSet's, whose labels differ in component.
    assert.deepEqual(svc.spec?.selector, ds.spec?.selector.matchLabels);
    for (const [k, v] of Object.entries(svc.spec?.selector ?? {})) assert.equal(ds.spec?.template.metadata?.labels?.[k], v, `pod template label ${k}`);

    const serve = invocation(mirror, help, configMaps).flags;
    // getaddrinfo would also find a short name through the search domains; the FQDN needs none.
    assert.equal(serve.get('bootstrap-dns'), `${svc.metadata?.name}.${svc.metadata?.namespace}.svc.cluster.local`);
    // The Service's records are dialed at this node's own router port; peers listen on the same.
    const router = parseListenAddress(serve.get('router-addr') ?? assert.fail('serve has no --router-addr'));
    assert.equal(router.host, NODE_IP);
    const svcPort = svc.spec?.ports?.find((p) => p.name === 'router');
    assert.equal(svcPort?.port, router.port);
    const containerPort = mirror.ports?.find((p) => p.name === svcPort?.targetPort);
    assert.equal(containerPort?.containerPort, router.port);
    assert.equal(containerPort.hostPort, router.port);
    // Peers fetch blobs from each other's registry port.
    const registry = parseListenAddress(serve.get('registry-addr') ?? assert.fail('serve has no --registry-addr'));
    assert.equal(serve.get('peer-registry-port'), String(registry.port));
  });

  it('reads the network key from the Secret, mounted read-only where --network-key-file points, and refuses to start without it', function () {
    const keyFile = invocation(mirror, help, configMaps).flags.get('network-key-file') ?? assert.fail('serve has no --network-key-file: the peer network would be open');
    const mount = mirror.volumeMounts?.find((m) => m.mountPath === dirname(keyFile));
    assert.ok(mount, `mirror does not mount ${dirname(keyFile)}`);
    assert.equal(mount.readOnly, true);
    assert.equal(mount.subPath, undefined, 'a subPath mount would never see an updated Secret');
    const volume = spec.volumes?.find((v) => v.name === mount.name);
    assert.deepEqual(volume?.secret, { secretName: NETWORK_KEY_SECRET, optional: false, defaultMode: 0o400 });
    // Without items, each data key is a file of the same name.
    assert.equal(basename(keyFile), 'key');
    assert.ok(!configure.volumeMounts?.some((m) => m.name === mount.name), 'configure has no business with the key');
  });

  it('the README\'s command makes that Secret, with a key the mirror reads', async function () {
    // The README's exact pipeline, run with --dry-run=client: kubectl prints the Secret instead of creating it.
    const readme = (await readFile(join(ROOT, 'manifests', 'README.md'), 'utf8')).split('\n');
    const first = readme.findIndex((l) => l.includes('openssl rand'));
    const last = readme.findIndex((l, i) => i >= first && l.includes('create secret generic'));
    assert.ok(first !== -1 && last !== -1, 'README.md has no key command (openssl rand ... | kubectl create secret generic)');
    const command = `set -o pipefail\n${readme.slice(first, last + 1).join('\n')} --dry-run=client -o json`;
    let stdout: string;
    try {
      ({ stdout } = await run('bash', ['-c', command], { env: { PATH: process.env.PATH, KUBECONFIG: join(tmp, 'no-kubeconfig') } }));
    } catch (err) {
      const e = err as Error & { stderr?: string };
      assert.fail(`the README's key command failed (it needs openssl and kubectl on PATH):\n${command}\n${e.stderr ?? e.message}`);
    }
    const secret = JSON.parse(stdout) as ISecret;
    assert.equal(secret.metadata?.name, NETWORK_KEY_SECRET);
    assert.equal(secret.metadata?.namespace, ds.metadata?.namespace);
    assert.deepEqual(Object.keys(secret.data ?? {}), ['key']);
    const text = Buffer.from(secret.data?.key ?? '', 'base64').toString('utf8');
    const key = parseNetworkKey(text);
    // Byte for byte the canonical file, which @libp2p/pnet (lowercase hex only) accepts.
    assert.equal(text, formatNetworkKey(key.secret));
    assert.notEqual(Buffer.from(key.secret).toString('hex'), '0'.repeat(64));
    // And the mirror's own generator writes the same format.
    const generated = generateNetworkKey();
    assert.equal(formatNetworkKey(parseNetworkKey(generated).secret), generated);
  });

  it('probes /healthz and /readyz on the metrics port', function () {
    assert.equal(mirror.livenessProbe?.httpGet?.path, '/healthz');
    assert.equal(mirror.livenessProbe?.httpGet?.port, 'metrics');
    assert.equal(mirror.readinessProbe?.httpGet?.path, '/readyz');
    assert.equal(mirror.readinessProbe?.httpGet?.port, 'metrics');
    assert.equal(ds.spec?.template.metadata?.annotations?.['prometheus.io/port'], '9090');
  });

  it('mounts the containerd socket, the content directory read-only, certs.d for configure only, and the data dir', function () {
    const serve = invocation(mirror, help, configMaps).flags;
    const configureFlags = invocation(configure, help, configMaps).flags;
    // The flags name the paths inside the container; each must be the mount of the same host path.
    assert.deepEqual(hostPathOf(spec, mirror, serve.get('containerd-sock') ?? ''), { path: SOCKET, type: 'Socket', readOnly: false });
    assert.deepEqual(hostPathOf(spec, mirror, serve.get('containerd-content-path') ?? ''), { path: CONTENT, type: 'Directory', readOnly: true });
    assert.deepEqual(hostPathOf(spec, mirror, serve.get('data-dir') ?? ''), { path: DATA, type: 'DirectoryOrCreate', readOnly: false });
    assert.deepEqual(hostPathOf(spec, configure, configureFlags.get('containerd-registry-config-path') ?? ''), { path: CERTS_D, type: 'DirectoryOrCreate', readOnly: false });
    assert.ok(!mirror.volumeMounts?.some((m) => m.mountPath === CERTS_D), 'serve has no business with certs.d');
    // configure also gets the data dir, for the compile cache (next test).
    assert.deepEqual(configure.volumeMounts?.map((m) => m.mountPath), [CERTS_D, DATA]);
  });

  it('keeps Node\'s compile cache in the data dir, where configure fills it for serve', async function () {
    this.timeout(30_000);
    const cacheOf = (c: IContainer): string | undefined => c.env?.find((e) => e.name === 'NODE_COMPILE_CACHE')?.value;
    const cache = cacheOf(mirror);
    assert.ok(cache?.startsWith(`${DATA}/`), `the mirror's compile cache ${cache} is not in the data dir`);
    assert.equal(cacheOf(configure), cache);
    assert.deepEqual(hostPathOf(spec, configure, DATA), { path: DATA, type: 'DirectoryOrCreate', readOnly: false });
    // configure, run with the init container's arguments, leaves the cache with an entry per module it loaded.
    const inv = invocation(configure, help, configMaps);
    const certsD = join(tmp, 'certs.d');
    await mkdir(certsD);
    const dir = join(tmp, 'compile-cache');
    await runAsContainer(inv, 'containerd-registry-config-path', certsD, { NODE_COMPILE_CACHE: dir });
    const entries = (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
    assert.ok(entries.length > 500, `${entries.length} cache entries`);
  });

  it('configure, run with the init container\'s own arguments and env, points every listed registry at the mirror', async function () {
    const inv = invocation(configure, help, configMaps);
    const certsD = join(tmp, 'certs.d');
    await mkdir(certsD);
    await runAsContainer(inv, 'containerd-registry-config-path', certsD);
    assert.deepEqual((await readdir(certsD)).sort(), ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io']);
    const hosts = await readFile(join(certsD, 'docker.io', 'hosts.toml'), 'utf8');
    assert.match(hosts, new RegExp(`\\[host\\."http://${NODE_IP.replaceAll('.', '\\.')}:5000"\\]`));
  });

  it('runs on every node, before other workloads, a tenth of the nodes at a time', function () {
    assert.ok(spec.tolerations?.some((t) => t.operator === 'Exists' && t.key === undefined && t.effect === undefined), 'no toleration of every taint');
    assert.equal(spec.priorityClassName, 'system-node-critical');
    assert.equal(ds.spec?.updateStrategy?.type, 'RollingUpdate');
    assert.equal(ds.spec?.updateStrategy?.rollingUpdate?.maxUnavailable, '10%');
    // Two pods on one node would both bind NODE_IP:5000.
    assert.equal(ds.spec?.updateStrategy?.rollingUpdate?.maxSurge, 0);
  });

  it('runs as root for containerd\'s files, with no capabilities, no escalation and a read-only root', function () {
    assert.equal(spec.automountServiceAccountToken, false);
    assert.equal(spec.enableServiceLinks, false);
    for (const c of [configure, mirror]) {
      const sc = c.securityContext;
      assert.equal(sc?.runAsUser, 0, c.name);
      assert.deepEqual(sc?.capabilities?.drop, ['ALL'], c.name);
      assert.equal(sc?.capabilities?.add, undefined, c.name);
      assert.equal(sc?.allowPrivilegeEscalation, false, c.name);
      assert.equal(sc?.readOnlyRootFilesystem, true, c.name);
      assert.notEqual(sc?.privileged, true, c.name);
    }
  });

  it('sets requests and memory limits, with room over the mirror\'s 128Mi peak', function () {
    for (const c of [configure, mirror]) {
      assert.ok(c.resources?.requests?.cpu !== undefined && c.resources.requests.memory !== undefined, `${c.name} has no requests`);
      assert.ok(c.resources.limits?.memory !== undefined, `${c.name} has no memory limit`);
    }
    assert.ok(bytes(mirror.resources?.limits?.memory) >= bytes('256Mi'));
    assert.ok(bytes(mirror.resources?.requests?.memory) >= bytes('128Mi'));
  });

  describe('manifests/cleanup', function () {
    let cleanupSpec: IPodSpec;
    let cleanup: IContainer;

    before(function () {
      cleanupSpec = podSpec(find<IDaemonSet>(cleanupObjects, 'DaemonSet', 'shoal-cleanup'));
      cleanup = container(cleanupSpec.initContainers, 'cleanup');
    });

    it('renders one DaemonSet, valid against the Kubernetes schema', async function () {
      assert.deepEqual(await validateAll(cleanupObjects), ['DaemonSet/shoal-cleanup']);
      assert.equal(cleanupObjects[0]!.metadata.namespace, 'shoal-system');
    });

    it('runs cleanup on every node, on the host path configure wrote, with the same image', function () {
      const inv = invocation(cleanup, help, []);
      assert.equal(inv.command, 'cleanup');
      assert.deepEqual(hostPathOf(cleanupSpec, cleanup, inv.flags.get('containerd-registry-config-path') ?? ''), { path: CERTS_D, type: 'DirectoryOrCreate', readOnly: false });
      assert.equal(cleanup.image, configure.image);
      assert.ok(cleanupSpec.tolerations?.some((t) => t.operator === 'Exists' && t.key === undefined), 'no toleration of every taint');
      assert.deepEqual(cleanup.securityContext, configure.securityContext);
    });

    it('puts back what configure replaced, run with both containers\' own arguments', async function () {
      const certsD = join(tmp, 'certs.d');
      await mkdir(join(certsD, 'docker.io'), { recursive: true });
      const own = 'server = "https://registry-1.docker.io"\n\n[host."https://corp-cache.example"]\n  capabilities = ["pull", "resolve"]\n';
      await writeFile(join(certsD, 'docker.io', 'hosts.toml'), own);
      await runAsContainer(invocation(configure, help, configMaps), 'containerd-registry-config-path', certsD);
      assert.notEqual(await readFile(join(certsD, 'docker.io', 'hosts.toml'), 'utf8'), own);
      await runAsContainer(invocation(cleanup, help, []), 'containerd-registry-config-path', certsD);
      assert.deepEqual(await readdir(certsD), ['docker.io']);
      assert.deepEqual(await readdir(join(certsD, 'docker.io')), ['hosts.toml']);
      assert.equal(await readFile(join(certsD, 'docker.io', 'hosts.toml'), 'utf8'), own);
    });
  });
});
