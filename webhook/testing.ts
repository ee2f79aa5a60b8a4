/**
 * Test doubles and helpers for the webhook's tests: a resolver and a Kubernetes
 * access whose answers the test chooses, AdmissionReviews shaped as
 * kube-apiserver sends them, and an HTTPS client that trusts a given CA.
 */
import { request } from 'node:https';
import type { Digest } from '../shared/digest.ts';
import { digestOf } from '../shared/digest.ts';
import type { RegistryCredentials } from '../shared/distribution/types.ts';
import { effectiveTag, type ImageRef } from '../shared/image-ref.ts';
import { silentLogger, type Logger } from '../shared/log.ts';
import type { KubeAccess, PodCredentialRefs } from './kube/types.ts';
import { createWebhook, type CaBundlePublisher, type RunningWebhook, type WebhookInit } from './server.ts';
import { ResolveError, type ImageResolver, type Resolution, type ResolveContext, type ResolvedBy } from './resolve/types.ts';
import { serviceDnsNames } from './tls/self-signed.ts';

/** A made-up digest, stable per name. */
export function fakeDigest(name: string): Digest {
  return digestOf(Buffer.from(name));
}

export type FakeAnswer = { readonly digest: Digest; readonly by: ResolvedBy } | { readonly error: string } | { readonly hang: true } | { readonly delayMs: number; readonly digest: Digest; readonly by: ResolvedBy };

export interface ResolveCall {
  readonly ref: ImageRef;
  readonly context: ResolveContext;
}

/**
 * Answers by `registry/repository:tag` (the tag `latest` when none is given):
 * a digest, a ResolveError, a delay, or never (ignoring the signal, as a broken
 * resolver would). Unknown images: ResolveError "not found".
 */
export class FakeResolver implements ImageResolver {
  readonly calls: ResolveCall[] = [];
  readonly #answers = new Map<string, FakeAnswer>();

  set(key: string, answer: FakeAnswer): this {
    this.#answers.set(key, answer);
    return this;
  }

  async resolve(ref: ImageRef, context: ResolveContext): Promise<Resolution> {
    this.calls.push({ ref, context });
    const key = `${ref.registry}/${ref.repository}:${effectiveTag(ref)}`;
    const answer = this.#answers.get(key);
    if (answer === undefined) throw new ResolveError(`${key}: not found`);
    if ('error' in answer) throw new ResolveError(answer.error);
    if ('hang' in answer) return new Promise<never>(() => {});
    if ('delayMs' in answer) await new Promise((resolve) => setTimeout(resolve, answer.delayMs));
    return { digest: answer.digest, by: answer.by };
  }
}

export class FakeKube implements KubeAccess {
  readonly namespaces = new Map<string, Record<string, string>>();
  /** registry → credentials for every pod. */
  readonly credentials = new Map<string, RegistryCredentials[]>();
  readonly credentialCalls: { refs: PodCredentialRefs; registry: string }[] = [];

  pullCredentials(refs: PodCredentialRefs, registry: string): Promise<RegistryCredentials[]> {
    this.credentialCalls.push({ refs, registry });
    return Promise.resolve(this.credentials.get(registry) ?? []);
  }

  namespaceAnnotations(namespace: string): Readonly<Record<string, string>> | undefined {
    return this.namespaces.get(namespace);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

type Json = Record<string, unknown>;

export interface PodInit {
  name?: string;
  namespace?: string;
  /** undefined: no annotations map at all. */
  annotations?: Record<string, string>;
  containers?: { name: string; image?: string }[];
  initContainers?: { name: string; image?: string }[];
  ephemeralContainers?: { name: string; image?: string }[];
  serviceAccountName?: string;
  imagePullSecrets?: string[];
}

/** A Pod as the API server holds it after defaulting (the shape a webhook sees). */
export function pod(init: PodInit): Json {
  const container = (c: { name: string; image?: string }) => ({
    name: c.name,
    ...(c.image === undefined ? {} : { image: c.image }),
    resources: {},
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
  });
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: {
      name: init.name ?? 'web-0',
      namespace: init.namespace ?? 'default',
      labels: { app: 'web' },
      ...(init.annotations === undefined ? {} : { annotations: init.annotations }),
    },
    spec: {
      ...(init.initContainers === undefined ? {} : { initContainers: init.initContainers.map(container) }),
      containers: (init.containers ?? []).map(container),
      ...(init.ephemeralContainers === undefined ? {} : { ephemeralContainers: init.ephemeralContainers.map((c) => ({ ...container(c), targetContainerName: 'app' })) }),
      restartPolicy: 'Always',
      dnsPolicy: 'ClusterFirst',
      serviceAccountName: init.serviceAccountName ?? 'default',
      ...(init.imagePullSecrets === undefined ? {} : { imagePullSecrets: init.imagePullSecrets.map((name) => ({ name })) }),
      securityContext: {},
      schedulerName: 'default-scheduler',
      enableServiceLinks: true,
      preemptionPolicy: 'PreemptLowerPriority',
    },
    status: {},
  };
}

let uidCounter = 0;
export function newUid(): string {
  uidCounter++;
  return `705ab4f5-6393-11e8-b7cc-${String(uidCounter).padStart(12, '0')}`;
}

const POD_KIND = { group: '', version: 'v1', kind: 'Pod' };
const PODS = { group: '', version: 'v1', resource: 'pods' };
const USER = {
  username: 'system:serviceaccount:kube-system:replicaset-controller',
  uid: '7c5b8a0e-5f3e-4d8e-9a8e-0d2f6f3b1c11',
  groups: ['system:serviceaccounts', 'system:serviceaccounts:kube-system', 'system:authenticated'],
};

/** A review of a pod CREATE, as kube-apiserver sends it to a webhook registered for admission.k8s.io/v1. */
export function createReview(object: Json, extra: { dryRun?: boolean; uid?: string } = {}): Json {
  const meta = object.metadata as Json;
  return {
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid: extra.uid ?? newUid(),
      kind: POD_KIND,
      resource: PODS,
      requestKind: POD_KIND,
      requestResource: PODS,
      name: meta.name,
      namespace: meta.namespace,
      operation: 'CREATE',
      userInfo: USER,
      object,
      oldObject: null,
      dryRun: extra.dryRun ?? false,
      options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' },
    },
  };
}

/** A review of an UPDATE of the pods/ephemeralcontainers subresource (`kubectl debug`). */
export function ephemeralReview(oldObject: Json, object: Json): Json {
  const meta = object.metadata as Json;
  return {
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid: newUid(),
      kind: POD_KIND,
      resource: PODS,
      subResource: 'ephemeralcontainers',
      requestKind: POD_KIND,
      requestResource: PODS,
      requestSubResource: 'ephemeralcontainers',
      name: meta.name,
      namespace: meta.namespace,
      operation: 'UPDATE',
      userInfo: { username: 'kubernetes-admin', groups: ['system:masters', 'system:authenticated'] },
      object,
      oldObject,
      dryRun: false,
      options: { kind: 'UpdateOptions', apiVersion: 'meta.k8s.io/v1', fieldManager: 'kubectl-debug' },
    },
  };
}

export interface HttpsAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  /** The body as JSON. */
  json(): Json;
}

export interface HttpsRequestInit {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** PEM the client trusts. */
  ca: string;
  /** The name verified against the certificate (the Service name the API server calls). */
  servername: string;
}

/** One request over a fresh TLS connection that trusts only `ca`. */
export function httpsRequest(port: number, init: HttpsRequestInit): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: init.method ?? 'POST',
        path: init.path ?? '/mutate',
        headers: init.headers,
        ca: init.ca,
        servername: init.servername,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode!, headers: res.headers, body, json: () => JSON.parse(body.toString('utf8')) as Json });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(init.body);
  });
}

export const SERVICE = { name: 'shoal-webhook', namespace: 'shoal-system' };
export const SERVICE_HOST = `${SERVICE.name}.${SERVICE.namespace}.svc`;

export interface TestWebhook {
  readonly webhook: RunningWebhook;
  readonly ca: string;
  /** POSTs a review as kube-apiserver does (JSON, Accept application/json). */
  review(body: unknown): Promise<HttpsAnswer>;
  request(init: Omit<HttpsRequestInit, 'ca' | 'servername'>): Promise<HttpsAnswer>;
  readonly metricsUrl: string;
  close(): Promise<void>;
}

/** A webhook on loopback with a self-signed CA of its own, built from the given parts. */
export async function startTestWebhook(init: {
  resolver: ImageResolver;
  kube?: KubeAccess;
  caBundlePublisher?: CaBundlePublisher;
  resolveBudgetMs?: number;
  logger?: Logger;
  extra?: Partial<WebhookInit>;
}): Promise<TestWebhook> {
  const webhook = await createWebhook({
    addr: { host: '127.0.0.1', port: 0 },
    metricsAddr: { host: '127.0.0.1', port: 0 },
    tls: { kind: 'self-signed', dnsNames: serviceDnsNames(SERVICE.name, SERVICE.namespace) },
    resolver: init.resolver,
    kube: init.kube,
    caBundlePublisher: init.caBundlePublisher,
    resolveBudgetMs: init.resolveBudgetMs,
    logger: init.logger ?? silentLogger,
    ...init.extra,
  });
  const ca = webhook.caPem!;
  const send = (r: Omit<HttpsRequestInit, 'ca' | 'servername'>) => httpsRequest(webhook.port, { ...r, ca, servername: SERVICE_HOST });
  return {
    webhook,
    ca,
    review: (body) => send({ body: JSON.stringify(body), headers: { 'Content-Type': 'application/json', Accept: 'application/json, */*' } }),
    request: send,
    metricsUrl: `http://127.0.0.1:${webhook.metricsPort}`,
    close: () => webhook.close(),
  };
}
