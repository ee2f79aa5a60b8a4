/**
 * Helpers for the manifests' tests: rendering a kustomization with `kubectl
 * kustomize`, checking every object against the Kubernetes schema (or, for
 * cert-manager's kinds, against their required fields and field names), and
 * reading a container's arguments and environment against the binary's --help.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import { parseAllDocuments } from 'yaml';

export const run = promisify(execFile);
export const ROOT = join(import.meta.dirname, '..');
/** What the downward API would give for status.hostIP (TEST-NET-1). */
export const NODE_IP = '192.0.2.10';

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
}

/** `kubectl kustomize DIR` (DIR relative to the repository, or absolute), as objects. */
export async function render(dir: string): Promise<KubeObject[]> {
  let stdout: string;
  try {
    ({ stdout } = await run('kubectl', ['kustomize', resolve(ROOT, dir)], { maxBuffer: 16 << 20 }));
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error('kubectl is not on PATH: this test renders the manifests with `kubectl kustomize` (kubectl 1.32 is on these machine images; it needs no cluster); install kubectl', { cause: err });
    }
    throw new Error(`kubectl kustomize ${dir} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
  const objects: KubeObject[] = [];
  for (const doc of parseAllDocuments(stdout)) {
    assert.deepEqual(doc.errors, [], `kubectl kustomize ${dir} printed YAML that does not parse`);
    objects.push(doc.toJS() as KubeObject);
  }
  assert.ok(objects.length > 0, `kubectl kustomize ${dir} rendered nothing`);
  return objects;
}

type Model = new (data: unknown) => { validate(): void };

/** kubernetes-models' class for the object's apiVersion and kind; failing when there is none, so nothing goes unchecked. */
export async function schemaOf(obj: KubeObject): Promise<Model> {
  let group: Record<string, unknown>;
  try {
    group = await import(`kubernetes-models/${obj.apiVersion}`) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`kubernetes-models has no API group version ${obj.apiVersion} (for ${obj.kind}/${obj.metadata.name})`, { cause: err });
  }
  const model = group[obj.kind];
  assert.equal(typeof model, 'function', `kubernetes-models has no ${obj.apiVersion} ${obj.kind} (for ${obj.metadata.name})`);
  return model as Model;
}

export const CERT_MANAGER_API = 'cert-manager.io/v1';

async function validatorOf(obj: KubeObject): Promise<(obj: KubeObject) => void> {
  const Model = await schemaOf(obj);
  return (o) => new Model(o).validate();
}

/** Checks every object, returning `Kind/name` for each; cert-manager's kinds are checked by checkCertManager. */
export async function validateAll(objects: readonly KubeObject[]): Promise<string[]> {
  const validated: string[] = [];
  for (const obj of objects) {
    const check = obj.apiVersion === CERT_MANAGER_API ? checkCertManager : await validatorOf(obj);
    try {
      check(obj);
    } catch (err) {
      assert.fail(`${obj.kind}/${obj.metadata.name} does not match the ${obj.apiVersion === CERT_MANAGER_API ? 'cert-manager' : 'Kubernetes'} schema: ${(err as Error).message}`);
    }
    validated.push(`${obj.kind}/${obj.metadata.name}`);
  }
  return validated;
}

type Fields = Record<string, unknown>;

function fieldsOf(value: unknown, where: string, known: readonly string[], required: readonly string[] = []): Fields {
  assert.ok(typeof value === 'object' && value !== null && !Array.isArray(value), `${where} must be an object`);
  const fields = value as Fields;
  for (const name of Object.keys(fields)) assert.ok(known.includes(name), `${where}.${name} is not a field (known: ${known.join(', ')})`);
  for (const name of required) assert.ok(fields[name] !== undefined, `${where}.${name} is required`);
  return fields;
}

function isString(value: unknown, where: string): void {
  assert.ok(typeof value === 'string' && value !== '', `${where} must be a non-empty string`);
}

/** Go's time.ParseDuration, as cert-manager reads duration and renewBefore. */
const GO_DURATION = /^(?:[0-9]+(?:\.[0-9]+)?(?:h|m|s|ms|us|µs|ns))+$/;
const KEY_USAGES = ['signing', 'digital signature', 'content commitment', 'key encipherment', 'key agreement', 'data encipherment', 'cert sign', 'crl sign', 'encipher only', 'decipher only', 'any', 'server auth', 'client auth', 'code signing', 'email protection', 's/mime', 'ipsec end system', 'ipsec tunnel', 'ipsec user', 'timestamping', 'ocsp signing', 'microsoft sgc', 'netscape sgc'];
const CERTIFICATE_FIELDS = ['subject', 'literalSubject', 'commonName', 'duration', 'renewBefore', 'renewBeforePercentage', 'dnsNames', 'ipAddresses', 'uris', 'otherNames', 'emailAddresses', 'secretName', 'secretTemplate', 'keystores', 'issuerRef', 'isCA', 'usages', 'privateKey', 'signatureAlgorithm', 'encodeUsagesInRequest', 'revisionHistoryLimit', 'additionalOutputFormats', 'nameConstraints'];
const ISSUER_KINDS = ['acme', 'ca', 'vault', 'selfSigned', 'venafi'];

/**
 * cert-manager's Issuer and Certificate are custom resources, which
 * kubernetes-models does not have: their cert-manager.io/v1 required fields,
 * field names and enumerations are checked here instead (a misspelt field fails,
 * which the models would let through). Throws an AssertionError saying what is wrong.
 */
export function checkCertManager(obj: KubeObject): void {
  const top = fieldsOf(obj, obj.kind, ['apiVersion', 'kind', 'metadata', 'spec'], ['metadata', 'spec']);
  isString(obj.metadata.name, 'metadata.name');
  isString(obj.metadata.namespace, 'metadata.namespace');
  if (obj.kind === 'Issuer') {
    const spec = fieldsOf(top.spec, 'spec', ISSUER_KINDS);
    const kinds = ISSUER_KINDS.filter((k) => spec[k] !== undefined);
    assert.equal(kinds.length, 1, `spec must configure exactly one of ${ISSUER_KINDS.join(', ')}`);
    if (spec.ca !== undefined) isString(fieldsOf(spec.ca, 'spec.ca', ['secretName', 'crlDistributionPoints', 'ocspServers', 'issuingCertificateURLs'], ['secretName']).secretName, 'spec.ca.secretName');
    if (spec.selfSigned !== undefined) fieldsOf(spec.selfSigned, 'spec.selfSigned', ['crlDistributionPoints']);
    return;
  }
  assert.equal(obj.kind, 'Certificate', `${CERT_MANAGER_API} ${obj.kind} is not checked by this test`);
  const spec = fieldsOf(top.spec, 'spec', CERTIFICATE_FIELDS, ['secretName', 'issuerRef']);
  isString(spec.secretName, 'spec.secretName');
  const issuerRef = fieldsOf(spec.issuerRef, 'spec.issuerRef', ['name', 'kind', 'group'], ['name']);
  isString(issuerRef.name, 'spec.issuerRef.name');
  if (issuerRef.group === undefined || issuerRef.group === 'cert-manager.io') {
    assert.ok(issuerRef.kind === undefined || issuerRef.kind === 'Issuer' || issuerRef.kind === 'ClusterIssuer', 'spec.issuerRef.kind must be Issuer or ClusterIssuer');
  }
  for (const name of ['duration', 'renewBefore'] as const) {
    if (spec[name] !== undefined) assert.ok(typeof spec[name] === 'string' && GO_DURATION.test(spec[name]), `spec.${name} must be a Go duration`);
  }
  for (const name of ['dnsNames', 'usages'] as const) {
    if (spec[name] === undefined) continue;
    assert.ok(Array.isArray(spec[name]), `spec.${name} must be a list`);
    for (const item of spec[name] as unknown[]) isString(item, `spec.${name}[]`);
  }
  for (const usage of (spec.usages as string[] | undefined) ?? []) assert.ok(KEY_USAGES.includes(usage), `spec.usages: "${usage}" is not a key usage`);
  if (spec.isCA !== undefined) assert.equal(typeof spec.isCA, 'boolean', 'spec.isCA must be a boolean');
  if (spec.commonName !== undefined) isString(spec.commonName, 'spec.commonName');
  if (spec.privateKey !== undefined) {
    const key = fieldsOf(spec.privateKey, 'spec.privateKey', ['rotationPolicy', 'encoding', 'algorithm', 'size']);
    if (key.algorithm !== undefined) assert.ok(['RSA', 'ECDSA', 'Ed25519'].includes(key.algorithm as string), 'spec.privateKey.algorithm must be RSA, ECDSA or Ed25519');
    if (key.algorithm === 'ECDSA' && key.size !== undefined) assert.ok([256, 384, 521].includes(key.size as number), 'an ECDSA key is 256, 384 or 521 bits');
    if (key.rotationPolicy !== undefined) assert.ok(['Never', 'Always'].includes(key.rotationPolicy as string), 'spec.privateKey.rotationPolicy must be Never or Always');
    if (key.encoding !== undefined) assert.ok(['PKCS1', 'PKCS8'].includes(key.encoding as string), 'spec.privateKey.encoding must be PKCS1 or PKCS8');
  }
}

export function find<T>(objects: readonly KubeObject[], kind: string, namePrefix: string): T {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name.startsWith(namePrefix));
  assert.equal(found.length, 1, `expected one ${kind} named ${namePrefix}*, found ${found.length}`);
  return found[0] as T;
}

export function container(list: readonly IContainer[] | undefined, name: string): IContainer {
  const found = list?.find((c) => c.name === name);
  assert.ok(found, `no container named ${name}`);
  return found;
}

/** A flag as a binary's `--help` lists it. */
export interface HelpFlag {
  readonly takesValue: boolean;
  readonly env: string;
}

/** The flags that `node ARGS... --help` lists (e.g. `[mirror/main.ts, serve]`), by name. */
export async function helpFlags(args: readonly string[]): Promise<Map<string, HelpFlag>> {
  const { stdout } = await run(process.execPath, [...args, '--help']);
  const flags = new Map<string, HelpFlag>();
  for (const line of stdout.split('\n')) {
    const m = line.match(/^\s+--([a-z0-9-]+)( [A-Z]+)?\s{2,}.*\[(SHOAL_[A-Z0-9_]+)\]$/);
    if (m) flags.set(m[1]!, { takesValue: m[2] !== undefined, env: m[3]! });
  }
  assert.ok(flags.size > 0, `found no flags in \`${args.join(' ')} --help\`:\n${stdout}`);
  return flags;
}

/** Kubernetes' $(VAR) expansion, with the downward API's status.hostIP as NODE_IP; an unknown name is an error, not left as text. */
export function expand(text: string, c: IContainer): string {
  return text.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, name: string) => {
    const v = c.env?.find((e) => e.name === name);
    if (v === undefined) assert.fail(`${c.name}: $(${name}) is not defined by the container's env`);
    if (v.value !== undefined) return v.value;
    if (v.valueFrom?.fieldRef?.fieldPath === 'status.hostIP') return NODE_IP;
    assert.fail(`${c.name}: ${name} must be a literal or the node's IP (fieldRef status.hostIP)`);
  });
}

/** A container's flags and SHOAL_* environment, as the binary would get them. */
export interface ContainerArgs {
  /** Flag name to raw value ("true" for a bare boolean). */
  readonly flags: Map<string, string>;
  /** SHOAL_* variables, from env and envFrom ConfigMaps. */
  readonly env: Map<string, string>;
}

/**
 * Reads `args` (expanded, the subcommand already taken off) against the flags
 * `--help` lists as `what`: each flag must be known and given once, each SHOAL_*
 * variable read by the binary and not also given as its flag (the flag would win).
 */
export function readContainerArgs(c: IContainer, args: readonly string[], known: ReadonlyMap<string, HelpFlag>, configMaps: readonly IConfigMap[], what: string): ContainerArgs {
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    assert.ok(arg.startsWith('--'), `${c.name}: stray argument "${arg}"`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const spec = known.get(name);
    assert.ok(spec, `${c.name}: --${name} is not a flag of \`${what}\` (it has ${[...known.keys()].map((k) => `--${k}`).join(', ')})`);
    let value = eq === -1 ? undefined : arg.slice(eq + 1);
    if (value === undefined) value = spec.takesValue ? args[++i] : 'true';
    assert.ok(value !== undefined, `${c.name}: --${name} has no value`);
    assert.ok(!flags.has(name), `${c.name}: --${name} given twice`);
    flags.set(name, value);
  }

  const env = new Map<string, string>();
  for (const e of c.env ?? []) if (e.value !== undefined) env.set(e.name, expand(e.value, c));
  for (const from of c.envFrom ?? []) {
    assert.equal(from.prefix, undefined, `${c.name}: an envFrom prefix would rename the SHOAL_* variables`);
    const ref = from.configMapRef?.name;
    assert.ok(ref, `${c.name}: envFrom other than a ConfigMap`);
    const cm = configMaps.find((m) => m.metadata?.name === ref);
    assert.ok(cm, `${c.name}: envFrom names ConfigMap ${ref}, which is not rendered`);
    for (const [k, v] of Object.entries(cm.data ?? {})) env.set(k, v);
  }
  const envNames = new Map([...known].map(([name, f]) => [f.env, name]));
  for (const name of env.keys()) {
    if (!name.startsWith('SHOAL_')) continue;
    const flag = envNames.get(name);
    assert.ok(flag, `${c.name}: ${name} is not read by \`${what}\` (it reads ${[...envNames.keys()].join(', ')})`);
    // The flag would win and the ConfigMap's value would be silently ignored.
    assert.ok(!flags.has(flag), `${c.name}: --${flag} is set both as a flag and through ${name}`);
  }
  return { flags, env: new Map([...env].filter(([k]) => k.startsWith('SHOAL_'))) };
}

export function bytes(quantity: string | number | undefined): number {
  assert.ok(quantity !== undefined, 'no quantity');
  const m = String(quantity).match(/^([0-9.]+)(Ki|Mi|Gi|k|M|G)?$/);
  assert.ok(m, `cannot read quantity ${quantity}`);
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, k: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}
