/**
 * The webhook's part of the kustomize base, rendered by `kubectl kustomize`: the
 * MutatingWebhookConfiguration field by field, the RBAC against
 * webhookPolicyRules, the Deployment's flags against `node webhook/main.ts --help`
 * and the webhook's own option checks, and the certificate chain from
 * cert-manager's Secret to the caBundle. Then the same for the self-signed
 * variant (the component webhook-self-signed/, built as the README's overlay).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { IMutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { IClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import type { IClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { IService } from 'kubernetes-models/v1/Service';
import type { IServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { parse as parseYaml } from 'yaml';
import { parseFlags } from '../shared/cli.ts';
import { parseListenAddress } from '../shared/listen-address.ts';
import { webhookPolicyRules } from '../webhook/kube/rbac.ts';
import { checkWebhookOptions, webhookFlags, type WebhookOptions } from '../webhook/options.ts';
import { serviceDnsNames } from '../webhook/tls/self-signed.ts';
import { bytes, container, expand, find, helpFlags, readContainerArgs, render, ROOT, validateAll, type HelpFlag, type KubeObject } from './testing.ts';

const WEBHOOK_MAIN = join(ROOT, 'webhook', 'main.ts');
const MIRROR_MAIN = join(ROOT, 'mirror', 'main.ts');
const INJECT_CA_FROM = 'cert-manager.io/inject-ca-from';

type LabelSelector = NonNullable<NonNullable<IPodDisruptionBudget['spec']>['selector']>;

interface Certificate extends KubeObject {
  spec: { secretName: string; issuerRef: { name: string; kind?: string }; dnsNames?: string[]; usages?: string[]; isCA?: boolean };
}
interface Issuer extends KubeObject {
  spec: { selfSigned?: object; ca?: { secretName: string } };
}

/** How the Deployment runs the webhook: its flags, its SHOAL_* environment, and both as the webhook parses and checks them. */
interface WebhookInvocation {
  readonly flags: Map<string, string>;
  readonly env: Map<string, string>;
  readonly options: WebhookOptions;
}

function webhookInvocation(c: IContainer, help: ReadonlyMap<string, HelpFlag>, configMaps: readonly IConfigMap[]): WebhookInvocation {
  assert.deepEqual(c.command, ['node', 'webhook/main.ts'], `${c.name} does not run the webhook`);
  const args = (c.args ?? []).map((a) => expand(a, c));
  const { flags, env } = readContainerArgs(c, args, help, configMaps, 'webhook/main.ts');
  // The values, with the webhook's own parsers and its checks between flags (exit 2 at start otherwise).
  let options: WebhookOptions | undefined;
  assert.doesNotThrow(() => {
    options = parseFlags(webhookFlags, args, Object.fromEntries(env));
    checkWebhookOptions(options);
  }, `${c.name}: the webhook refuses these arguments`);
  return { flags, env, options: options! };
}

function podSpecOf(workload: IDeployment | IDaemonSet): IPodSpec {
  const spec = workload.spec?.template.spec;
  assert.ok(spec, `${workload.metadata?.name} has no pod spec`);
  return spec;
}

/** A label selector's verdict on a set of labels, as the API server decides it. */
function selects(selector: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const value = labels[e.key];
    const ok = { In: () => value !== undefined && (e.values ?? []).includes(value), NotIn: () => value === undefined || !(e.values ?? []).includes(value), Exists: () => value !== undefined, DoesNotExist: () => value === undefined }[e.operator];
    assert.ok(ok, `unknown selector operator ${e.operator}`);
    if (!ok()) return false;
  }
  return true;
}

/** The namespace's labels as the API server sets them (kubernetes.io/metadata.name is immutable and always there). */
function namespaceLabels(name: string): Record<string, string> {
  return { 'kubernetes.io/metadata.name': name };
}

function volumeAt(spec: IPodSpec, c: IContainer, mountPath: string) {
  const mount = c.volumeMounts?.find((m) => m.mountPath === mountPath);
  assert.ok(mount, `${c.name} does not mount ${mountPath}`);
  const volume = spec.volumes?.find((v) => v.name === mount.name);
  assert.ok(volume, `no volume ${mount.name}`);
  return { mount, volume };
}

/** The README's kustomization for the self-signed variant, written beside a link to manifests/ as the README places it. */
async function readmeSelfSignedOverlay(dir: string): Promise<string> {
  const readme = (await readFile(join(ROOT, 'manifests', 'README.md'), 'utf8')).split('\n');
  const start = readme.findIndex((l) => /^cat > shoal-self-signed\/kustomization\.yaml <<'EOF'$/.test(l));
  const end = readme.findIndex((l, i) => i > start && l === 'EOF');
  assert.ok(start !== -1 && end !== -1, "README.md has no `cat > shoal-self-signed/kustomization.yaml <<'EOF'` ... `EOF` block");
  await symlink(join(ROOT, 'manifests'), join(dir, 'manifests'));
  await mkdir(join(dir, 'shoal-self-signed'));
  await writeFile(join(dir, 'shoal-self-signed', 'kustomization.yaml'), readme.slice(start + 1, end).join('\n') + '\n');
  return join(dir, 'shoal-self-signed');
}

describe('manifests/: the webhook', function () {
  let base: KubeObject[];
  let help: Map<string, HelpFlag>;
  let configMaps: IConfigMap[];
  let deployment: IDeployment;
  let spec: IPodSpec;
  let webhook: IContainer;
  let inv: WebhookInvocation;
  let service: IService;
  let mwc: IMutatingWebhookConfiguration;
  let mirror: IContainer;
  let mirrorSpec: IPodSpec;

  before(async function () {
    [base, help] = await Promise.all([render('manifests'), helpFlags([WEBHOOK_MAIN])]);
    configMaps = base.filter((o) => o.kind === 'ConfigMap') as IConfigMap[];
    deployment = find<IDeployment>(base, 'Deployment', 'shoal-webhook');
    spec = podSpecOf(deployment);
    webhook = container(spec.containers, 'webhook');
    inv = webhookInvocation(webhook, help, configMaps);
    service = find<IService>(base, 'Service', 'shoal-webhook');
    mwc = find<IMutatingWebhookConfiguration>(base, 'MutatingWebhookConfiguration', 'shoal');
    const ds = find<IDaemonSet>(base, 'DaemonSet', 'shoal-mirror');
    mirrorSpec = podSpecOf(ds);
    mirror = container(mirrorSpec.containers, 'mirror');
  });

  it('sends pod creations and new ephemeral containers to POST /mutate, never blocking a pod, and nothing else', function () {
    assert.deepEqual(mwc.webhooks, [
      {
        name: 'pin.shoal.dev',
        admissionReviewVersions: ['v1'],
        clientConfig: { service: { name: service.metadata?.name, namespace: service.metadata?.namespace, path: '/mutate', port: 443 } },
        rules: [
          { apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' },
          { apiGroups: [''], apiVersions: ['v1'], operations: ['UPDATE'], resources: ['pods/ephemeralcontainers'], scope: 'Namespaced' },
        ],
        matchPolicy: 'Equivalent',
        failurePolicy: 'Ignore',
        sideEffects: 'None',
        timeoutSeconds: 5,
        reinvocationPolicy: 'IfNeeded',
        namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', 'shoal-system'] }] },
      },
    ]);
    // Cluster-scoped: kustomize's namespace must not have been put on it.
    assert.equal(mwc.metadata?.namespace, undefined);
    // A review must end before the API server gives up on it, with a second left to answer.
    assert.ok(inv.options.resolveBudget + 1000 <= mwc.webhooks[0]!.timeoutSeconds * 1000, `--resolve-budget ${inv.options.resolveBudget} ms leaves no room under timeoutSeconds`);
  });

  it('leaves out kube-system and the namespace the kustomization installs into', async function () {
    const kustomization = parseYaml(await readFile(join(ROOT, 'manifests', 'kustomization.yaml'), 'utf8')) as { namespace?: string };
    assert.ok(kustomization.namespace, 'manifests/kustomization.yaml sets no namespace');
    assert.equal(deployment.metadata?.namespace, kustomization.namespace);
    const selector = mwc.webhooks![0]!.namespaceSelector!;
    assert.equal(selects(selector, namespaceLabels('kube-system')), false, 'kube-system is reviewed');
    assert.equal(selects(selector, namespaceLabels(kustomization.namespace)), false, `${kustomization.namespace} is reviewed: its pods would wait on themselves`);
    for (const ns of ['default', 'prod', 'kube-public']) assert.equal(selects(selector, namespaceLabels(ns)), true, ns);
    // No objectSelector: a pod opts out with the annotation shoal.dev/pin=false, which the webhook counts.
    assert.equal(mwc.webhooks![0]!.objectSelector, undefined);
  });

  it('grants exactly webhookPolicyRules for its own configuration, to its own service account, and nothing else', function () {
    const role = find<IClusterRole>(base, 'ClusterRole', 'shoal-webhook');
    assert.equal(inv.options.webhookConfigName, mwc.metadata?.name, '--webhook-config-name is not the rendered configuration');
    assert.deepEqual(role.rules, webhookPolicyRules(mwc.metadata!.name!));
    const binding = find<IClusterRoleBinding>(base, 'ClusterRoleBinding', 'shoal-webhook');
    assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata?.name });
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: spec.serviceAccountName, namespace: deployment.metadata?.namespace }]);
    assert.equal(spec.serviceAccountName, 'shoal-webhook');
    const account = find<IServiceAccount>(base, 'ServiceAccount', 'shoal-webhook');
    // The webhook talks to the API with the pod's token.
    assert.notEqual(account.automountServiceAccountToken, false);
    assert.equal(spec.automountServiceAccountToken, true);
    const grants = base.filter((o) => ['Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind));
    assert.deepEqual(grants.map((o) => `${o.kind}/${o.metadata.name}`), ['ClusterRole/shoal-webhook', 'ClusterRoleBinding/shoal-webhook']);
  });

  it('runs the webhook with flags and env that `node webhook/main.ts --help` lists and the webhook accepts', function () {
    assert.deepEqual([...inv.flags.keys()], ['addr', 'metrics-addr', 'router-addr', 'bootstrap-dns', 'peer-registry-port', 'network-key-file', 'tls-cert-file', 'tls-key-file']);
    assert.deepEqual([...inv.env.keys()].sort(), ['SHOAL_LOG_LEVEL', 'SHOAL_MUTABLE_TAGS', 'SHOAL_RESOLVE_BUDGET']);
    assert.equal(spec.containers.length, 1);
    assert.equal(spec.initContainers, undefined);
    assert.equal(inv.options.selfSigned, false);
    assert.equal(webhook.image, mirror.image, 'one image for both parts');
    // Service links would put SHOAL_WEBHOOK_* variables (from the Service shoal-webhook) next to the flags' SHOAL_* names.
    assert.equal(spec.enableServiceLinks, false);
  });

  it('joins the mirrors\' peer network as they do: the same bootstrap name, router port, registry port and key', async function () {
    const serve = readContainerArgs(mirror, (mirror.args ?? []).slice(1).map((a) => expand(a, mirror)), await helpFlags([MIRROR_MAIN, 'serve']), configMaps, 'serve').flags;
    assert.equal(inv.flags.get('bootstrap-dns'), serve.get('bootstrap-dns'));
    // A client dials each bootstrap address at its own router port (shared/p2p/dht-router.ts), so the ports must agree.
    assert.equal(inv.options.routerAddr.port, parseListenAddress(serve.get('router-addr')!).port);
    assert.equal(inv.options.routerAddr.host, undefined, 'the pod IP is not known in advance: listen on every address');
    assert.equal(inv.options.peerRegistryPort, parseListenAddress(serve.get('registry-addr')!).port);
    assert.equal(spec.hostNetwork, undefined, 'a client needs no host network: it dials out');

    const keyFile = inv.flags.get('network-key-file') ?? assert.fail('no --network-key-file: the mirrors would refuse the webhook');
    const { mount, volume } = volumeAt(spec, webhook, dirname(keyFile));
    assert.equal(mount.readOnly, true);
    assert.equal(mount.subPath, undefined);
    const mirrorKey = volumeAt(mirrorSpec, mirror, dirname(serve.get('network-key-file')!)).volume;
    assert.equal(volume.secret?.secretName, mirrorKey.secret?.secretName);
    assert.equal(volume.secret?.optional, false);
    assert.equal(basename(keyFile), basename(serve.get('network-key-file')!));
  });

  it('serves the certificate cert-manager keeps in a Secret, whose CA cainjector puts into the configuration', function () {
    const certificates = base.filter((o) => o.kind === 'Certificate') as Certificate[];
    const issuers = base.filter((o) => o.kind === 'Issuer') as Issuer[];
    const certFile = inv.flags.get('tls-cert-file')!;
    assert.equal(dirname(inv.flags.get('tls-key-file')!), dirname(certFile));
    const { mount, volume } = volumeAt(spec, webhook, dirname(certFile));
    // The kubelet replaces a Secret volume's files on renewal; a subPath mount would never see them.
    assert.equal(mount.subPath, undefined);
    assert.equal(mount.readOnly, true);
    assert.deepEqual([basename(certFile), basename(inv.flags.get('tls-key-file')!)], ['tls.crt', 'tls.key']);
    assert.equal(volume.secret?.optional, false);

    const serving = certificates.find((c) => c.spec.secretName === volume.secret?.secretName);
    assert.ok(serving, `no Certificate writes the Secret ${volume.secret?.secretName}`);
    assert.equal(serving.metadata.namespace, deployment.metadata?.namespace);
    // The names the API server may call the Service by, as --self-signed would issue them.
    assert.deepEqual(serving.spec.dnsNames, serviceDnsNames(service.metadata!.name!, service.metadata!.namespace!));
    assert.ok(serving.spec.usages?.includes('server auth'));
    assert.notEqual(serving.spec.isCA, true);
    assert.equal(mwc.metadata?.annotations?.[INJECT_CA_FROM], `${serving.metadata.namespace}/${serving.metadata.name}`);

    // Serving certificate ← CA Issuer ← CA Certificate ← self-signed Issuer: a renewed serving certificate keeps the caBundle.
    const caIssuer = issuers.find((i) => i.metadata.name === serving.spec.issuerRef.name);
    assert.equal(serving.spec.issuerRef.kind, 'Issuer');
    assert.ok(caIssuer?.spec.ca, `the serving certificate's issuer ${serving.spec.issuerRef.name} is not a CA Issuer`);
    const ca = certificates.find((c) => c.spec.secretName === caIssuer.spec.ca!.secretName);
    assert.ok(ca, `no Certificate writes the CA Secret ${caIssuer.spec.ca.secretName}`);
    assert.equal(ca.spec.isCA, true);
    const root = issuers.find((i) => i.metadata.name === ca.spec.issuerRef.name);
    assert.ok(root?.spec.selfSigned, 'the CA is not self-signed');
    assert.equal(certificates.length + issuers.length, 4, 'nothing else from cert-manager');
  });

  it('is reached through a Service that targets the container ports by name', function () {
    assert.deepEqual(service.spec?.selector, deployment.spec?.selector.matchLabels);
    for (const [k, v] of Object.entries(service.spec?.selector ?? {})) assert.equal(deployment.spec?.template.metadata?.labels?.[k], v, `pod template label ${k}`);
    const ports = new Map(webhook.ports?.map((p) => [p.name, p.containerPort]));
    assert.deepEqual(service.spec?.ports?.map((p) => [p.name, p.port, p.targetPort]), [['https', 443, 'https'], ['metrics', 9091, 'metrics']]);
    assert.equal(mwc.webhooks![0]!.clientConfig.service?.port, 443);
    assert.equal(ports.get('https'), inv.options.addr.port);
    assert.equal(ports.get('metrics'), inv.options.metricsAddr.port);
    assert.equal(service.spec?.type, undefined, 'ClusterIP');
  });

  it('probes /healthz and /readyz on the metrics port, and waits before stopping so that no review is refused', function () {
    assert.deepEqual([webhook.livenessProbe?.httpGet?.path, webhook.livenessProbe?.httpGet?.port], ['/healthz', 'metrics']);
    assert.deepEqual([webhook.readinessProbe?.httpGet?.path, webhook.readinessProbe?.httpGet?.port], ['/readyz', 'metrics']);
    assert.equal(deployment.spec?.template.metadata?.annotations?.['prometheus.io/port'], String(inv.options.metricsAddr.port));
    const sleep = webhook.lifecycle?.preStop?.sleep?.seconds;
    assert.ok(sleep !== undefined && sleep > 0, 'no preStop sleep');
    assert.ok(sleep + 5 < (spec.terminationGracePeriodSeconds ?? 30), 'the grace period must cover the sleep and the 5 s drain');
  });

  it('runs two replicas on different nodes where it can, one at least through drains and rollouts', function () {
    assert.equal(deployment.spec?.replicas, 2);
    assert.deepEqual(deployment.spec?.strategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } });
    const labels = deployment.spec?.template.metadata?.labels ?? {};
    assert.deepEqual(spec.topologySpreadConstraints?.map((t) => [t.topologyKey, t.maxSkew, t.whenUnsatisfiable]), [['kubernetes.io/hostname', 1, 'ScheduleAnyway']]);
    assert.ok(selects(spec.topologySpreadConstraints[0]!.labelSelector!, labels), 'the spread constraint does not select the pods');

    const pdb = find<IPodDisruptionBudget>(base, 'PodDisruptionBudget', 'shoal-webhook');
    assert.equal(pdb.spec?.minAvailable, 1);
    assert.equal(pdb.spec?.unhealthyPodEvictionPolicy, 'AlwaysAllow');
    assert.deepEqual(pdb.spec?.selector, deployment.spec?.selector);
    assert.ok(selects(pdb.spec.selector, labels), 'the PDB does not select the Deployment\'s pods');
    const mirrorLabels = find<IDaemonSet>(base, 'DaemonSet', 'shoal-mirror').spec?.template.metadata?.labels ?? {};
    assert.equal(selects(pdb.spec.selector, mirrorLabels), false, 'the PDB selects the mirror\'s pods');
    // With failurePolicy Ignore the cluster runs on without it: it preempts nothing.
    assert.equal(spec.priorityClassName, undefined);
  });

  it('runs as a numeric non-root user, with a read-only root, no capabilities and a writable /tmp', function () {
    const pod = spec.securityContext;
    assert.equal(pod?.runAsNonRoot, true);
    assert.ok(Number.isInteger(pod?.runAsUser) && pod.runAsUser! > 0, 'runAsUser must be a non-zero number (runAsNonRoot cannot check a user name)');
    assert.equal(pod?.seccompProfile?.type, 'RuntimeDefault');
    const sc = webhook.securityContext;
    assert.equal(sc?.readOnlyRootFilesystem, true);
    assert.equal(sc?.allowPrivilegeEscalation, false);
    assert.deepEqual(sc?.capabilities, { drop: ['ALL'] });
    assert.equal(sc?.runAsUser, undefined, 'the pod\'s user applies');
    assert.equal(sc?.privileged, undefined);
    // The DHT client's identity goes to os.tmpdir().
    assert.ok(volumeAt(spec, webhook, '/tmp').volume.emptyDir, '/tmp is not an emptyDir');
    // The Secrets' files are root's: the user reads them through fsGroup and the group bit.
    assert.ok(pod?.fsGroup !== undefined);
    for (const v of spec.volumes ?? []) {
      if (v.secret) assert.equal((v.secret.defaultMode ?? 0o644) & 0o040, 0o040, `${v.name} is not readable by the group`);
    }
  });

  it('sets requests and a memory limit above its measured ~200Mi', function () {
    assert.ok(webhook.resources?.requests?.cpu !== undefined);
    assert.ok(bytes(webhook.resources?.requests?.memory) >= bytes('256Mi'));
    assert.ok(bytes(webhook.resources?.limits?.memory) >= bytes('512Mi'));
  });

  describe('manifests/webhook-self-signed (without cert-manager)', function () {
    let tmp: string;
    let objects: KubeObject[];

    before(async function () {
      tmp = await mkdtemp(join(tmpdir(), 'shoal-self-signed-'));
      objects = await render(await readmeSelfSignedOverlay(tmp));
    });
    after(async function () {
      await rm(tmp, { recursive: true, force: true });
    });

    it('renders the base less cert-manager and the PDB, each object valid against the Kubernetes schema', async function () {
      await validateAll(objects);
      const dropped = (o: KubeObject) => o.apiVersion.startsWith('cert-manager.io/') || o.kind === 'PodDisruptionBudget';
      const key = (o: KubeObject) => `${o.kind}/${o.metadata.name}`;
      assert.deepEqual(objects.map(key).sort(), base.filter((o) => !dropped(o)).map(key).sort());
      // Everything but the Deployment and the configuration is the base's own.
      for (const o of objects) {
        if (o.kind === 'Deployment' || o.kind === 'MutatingWebhookConfiguration') continue;
        assert.deepEqual(o, base.find((b) => key(b) === key(o)), key(o));
      }
    });

    it('runs one replica with --self-signed instead of the certificate files, replaced rather than rolled', function () {
      const got = find<IDeployment>(objects, 'Deployment', 'shoal-webhook');
      const want = structuredClone(deployment);
      want.spec!.replicas = 1;
      // Two pods at once would each publish their own CA.
      want.spec!.strategy = { type: 'Recreate' };
      const wantSpec = podSpecOf(want);
      const c = container(wantSpec.containers, 'webhook');
      c.args = [...(c.args ?? []).filter((a) => !a.startsWith('--tls-')), '--self-signed'];
      c.volumeMounts = c.volumeMounts?.filter((m) => m.name !== 'tls');
      wantSpec.volumes = wantSpec.volumes?.filter((v) => v.name !== 'tls');
      assert.deepEqual(got, want);

      const selfSigned = webhookInvocation(container(podSpecOf(got).containers, 'webhook'), help, configMaps).options;
      assert.equal(selfSigned.selfSigned, true);
      // The certificate it makes names this Service, and its CA goes into this configuration.
      assert.equal(selfSigned.serviceName, service.metadata?.name);
      assert.equal(selfSigned.serviceNamespace, service.metadata?.namespace);
      assert.equal(selfSigned.webhookConfigName, mwc.metadata?.name);
    });

    it('leaves the caBundle to the webhook: no cainjector annotation, the same webhook otherwise', function () {
      const got = find<IMutatingWebhookConfiguration>(objects, 'MutatingWebhookConfiguration', 'shoal');
      assert.equal(got.metadata?.annotations?.[INJECT_CA_FROM], undefined);
      assert.deepEqual(got.webhooks, mwc.webhooks);
      const role = find<IClusterRole>(objects, 'ClusterRole', 'shoal-webhook');
      assert.ok(role.rules?.some((r) => r.resources?.includes('mutatingwebhookconfigurations') && r.verbs.includes('patch') && r.resourceNames?.includes(got.metadata!.name!)), 'the webhook may not patch its configuration');
    });
  });
});
