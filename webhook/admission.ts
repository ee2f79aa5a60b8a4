/**
 * admission.k8s.io/v1 as kube-apiserver sends it to a mutating webhook, and the
 * few fields of a Pod the webhook reads. @kubernetes/client-node has no
 * AdmissionReview types. A review is checked once here; code further in trusts it.
 */

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';

export interface GroupVersionKind {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
}

export interface GroupVersionResource {
  readonly group: string;
  readonly version: string;
  readonly resource: string;
}

export type Operation = 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
const OPERATIONS: readonly Operation[] = ['CREATE', 'UPDATE', 'DELETE', 'CONNECT'];

export interface UserInfo {
  readonly username?: string;
  readonly uid?: string;
  readonly groups?: readonly string[];
  readonly extra?: Readonly<Record<string, readonly string[]>>;
}

export interface AdmissionRequest {
  readonly uid: string;
  /** The kind of `object` as the webhook sees it (after conversion to a version it registered for). */
  readonly kind: GroupVersionKind;
  readonly resource: GroupVersionResource;
  /** `ephemeralcontainers` for the pods/ephemeralcontainers subresource; absent for the pod itself. */
  readonly subResource?: string;
  /** The kind the original API request was for. */
  readonly requestKind?: GroupVersionKind;
  readonly requestResource?: GroupVersionResource;
  readonly requestSubResource?: string;
  /** Absent on CREATE with generateName. */
  readonly name?: string;
  /** Absent for cluster-scoped resources. */
  readonly namespace?: string;
  readonly operation: Operation;
  readonly userInfo: UserInfo;
  /** The object after the request (CREATE, UPDATE); null on DELETE. */
  readonly object?: unknown;
  /** The object before the request (UPDATE, DELETE); null on CREATE. */
  readonly oldObject?: unknown;
  readonly dryRun?: boolean;
  /** CreateOptions, UpdateOptions or DeleteOptions. */
  readonly options?: unknown;
}

export interface Status {
  readonly code?: number;
  readonly message?: string;
  readonly reason?: string;
}

export interface AdmissionResponse {
  readonly uid: string;
  readonly allowed: boolean;
  readonly patchType?: 'JSONPatch';
  /** Base64 of the JSON Patch (RFC 6902) document. */
  readonly patch?: string;
  /** Shown to the user by kubectl; keep each short (the API server truncates past 256 characters). */
  readonly warnings?: readonly string[];
  readonly status?: Status;
}

export interface AdmissionReview {
  readonly apiVersion: typeof ADMISSION_API_VERSION;
  readonly kind: 'AdmissionReview';
  readonly request?: AdmissionRequest;
  readonly response?: AdmissionResponse;
}

/** An incoming review: request is always present. */
export interface IncomingReview extends AdmissionReview {
  readonly request: AdmissionRequest;
}

/** The three lists of a pod spec whose entries carry an image, in the order the API writes them. */
export type ContainerField = 'initContainers' | 'containers' | 'ephemeralContainers';
export const CONTAINER_FIELDS: readonly ContainerField[] = ['initContainers', 'containers', 'ephemeralContainers'];

export interface ContainerView {
  readonly name: string;
  /** undefined: no image (the API server refuses such a pod; nothing to pin). */
  readonly image: string | undefined;
}

/** What the webhook reads of a Pod. */
export interface PodView {
  readonly name: string | undefined;
  /** false: the object has no metadata at all. */
  readonly hasMetadata: boolean;
  /** undefined: the object has no annotations map (a patch must add the whole map). */
  readonly annotations: Readonly<Record<string, string>> | undefined;
  readonly serviceAccountName: string | undefined;
  readonly imagePullSecrets: readonly string[];
  readonly containers: Readonly<Record<ContainerField, readonly ContainerView[]>>;
}

/** A request body that is not an AdmissionReview the webhook can answer; the message says what is wrong. */
export class ReviewError extends Error {
  override name = 'ReviewError';
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `"${value.length > 60 ? `${value.slice(0, 57)}...` : value}"`;
  if (value === undefined) return 'nothing';
  return typeof value === 'object' ? 'an object' : (JSON.stringify(value) ?? typeof value);
}

function str(obj: Json, key: string, at: string): string {
  const value = obj[key];
  if (typeof value !== 'string') throw new ReviewError(`${at}.${key} must be a string, got ${describe(value)}`);
  return value;
}

function optStr(obj: Json, key: string, at: string): string | undefined {
  const value = obj[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new ReviewError(`${at}.${key} must be a string, got ${describe(value)}`);
  return value;
}

function gvk(obj: Json, key: string, at: string): GroupVersionKind {
  const value = obj[key];
  if (!isObject(value)) throw new ReviewError(`${at}.${key} must be an object {group, version, kind}, got ${describe(value)}`);
  return { group: str(value, 'group', `${at}.${key}`), version: str(value, 'version', `${at}.${key}`), kind: str(value, 'kind', `${at}.${key}`) };
}

function gvr(obj: Json, key: string, at: string): GroupVersionResource {
  const value = obj[key];
  if (!isObject(value)) throw new ReviewError(`${at}.${key} must be an object {group, version, resource}, got ${describe(value)}`);
  return { group: str(value, 'group', `${at}.${key}`), version: str(value, 'version', `${at}.${key}`), resource: str(value, 'resource', `${at}.${key}`) };
}

/** Checks a decoded request body; throws ReviewError saying what is missing or wrong. */
export function parseAdmissionReview(body: unknown): IncomingReview {
  if (!isObject(body)) throw new ReviewError(`the body must be an AdmissionReview object, got ${describe(body)}`);
  if (body.kind !== 'AdmissionReview') throw new ReviewError(`kind must be "AdmissionReview", got ${describe(body.kind)}`);
  if (body.apiVersion !== ADMISSION_API_VERSION) {
    throw new ReviewError(`apiVersion must be "${ADMISSION_API_VERSION}", got ${describe(body.apiVersion)} (set admissionReviewVersions: ["v1"] in the webhook configuration)`);
  }
  const r = body.request;
  if (!isObject(r)) throw new ReviewError(`request must be an object, got ${describe(r)}`);
  const uid = str(r, 'uid', 'request');
  if (uid === '') throw new ReviewError('request.uid must not be empty');
  const operation = str(r, 'operation', 'request');
  if (!(OPERATIONS as readonly string[]).includes(operation)) throw new ReviewError(`request.operation must be one of ${OPERATIONS.join(', ')}, got ${describe(operation)}`);
  const userInfo = r.userInfo === undefined || r.userInfo === null ? {} : r.userInfo;
  if (!isObject(userInfo)) throw new ReviewError(`request.userInfo must be an object, got ${describe(userInfo)}`);
  if (r.dryRun !== undefined && r.dryRun !== null && typeof r.dryRun !== 'boolean') throw new ReviewError(`request.dryRun must be a boolean, got ${describe(r.dryRun)}`);
  const request: AdmissionRequest = {
    uid,
    kind: gvk(r, 'kind', 'request'),
    resource: gvr(r, 'resource', 'request'),
    subResource: optStr(r, 'subResource', 'request') || undefined,
    requestKind: r.requestKind === undefined ? undefined : gvk(r, 'requestKind', 'request'),
    requestResource: r.requestResource === undefined ? undefined : gvr(r, 'requestResource', 'request'),
    requestSubResource: optStr(r, 'requestSubResource', 'request') || undefined,
    name: optStr(r, 'name', 'request') || undefined,
    namespace: optStr(r, 'namespace', 'request') || undefined,
    operation: operation as Operation,
    userInfo,
    object: r.object ?? undefined,
    oldObject: r.oldObject ?? undefined,
    dryRun: r.dryRun ?? undefined,
    options: r.options ?? undefined,
  };
  return { apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', request };
}

function containerList(spec: Json, field: ContainerField, at: string): ContainerView[] {
  const value = spec[field];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new ReviewError(`${at}.${field} must be an array, got ${describe(value)}`);
  return value.map((entry: unknown, i) => {
    const where = `${at}.${field}[${i}]`;
    if (!isObject(entry)) throw new ReviewError(`${where} must be an object, got ${describe(entry)}`);
    return { name: str(entry, 'name', where), image: optStr(entry, 'image', where) || undefined };
  });
}

/** Reads the fields the webhook needs from a Pod object; throws ReviewError when they have the wrong shape. */
export function parsePod(object: unknown, at = 'request.object'): PodView {
  if (!isObject(object)) throw new ReviewError(`${at} must be a Pod object, got ${describe(object)}`);
  const metadata = object.metadata;
  if (metadata !== undefined && metadata !== null && !isObject(metadata)) throw new ReviewError(`${at}.metadata must be an object, got ${describe(metadata)}`);
  const meta = metadata ?? {};
  let annotations: Record<string, string> | undefined;
  if (meta.annotations !== undefined && meta.annotations !== null) {
    if (!isObject(meta.annotations)) throw new ReviewError(`${at}.metadata.annotations must be an object, got ${describe(meta.annotations)}`);
    annotations = {};
    for (const [key, value] of Object.entries(meta.annotations)) {
      if (typeof value !== 'string') throw new ReviewError(`${at}.metadata.annotations["${key}"] must be a string, got ${describe(value)}`);
      annotations[key] = value;
    }
  }
  const spec = object.spec;
  if (!isObject(spec)) throw new ReviewError(`${at}.spec must be an object, got ${describe(spec)}`);
  const pullSecrets = spec.imagePullSecrets ?? [];
  if (!Array.isArray(pullSecrets)) throw new ReviewError(`${at}.spec.imagePullSecrets must be an array, got ${describe(pullSecrets)}`);
  const imagePullSecrets: string[] = [];
  for (const [i, ref] of pullSecrets.entries()) {
    if (!isObject(ref)) throw new ReviewError(`${at}.spec.imagePullSecrets[${i}] must be an object, got ${describe(ref)}`);
    const name = optStr(ref, 'name', `${at}.spec.imagePullSecrets[${i}]`);
    if (name) imagePullSecrets.push(name);
  }
  return {
    name: optStr(meta, 'name', `${at}.metadata`) || optStr(meta, 'generateName', `${at}.metadata`) || undefined,
    hasMetadata: isObject(metadata),
    annotations,
    serviceAccountName: optStr(spec, 'serviceAccountName', `${at}.spec`) || undefined,
    imagePullSecrets,
    containers: {
      initContainers: containerList(spec, 'initContainers', `${at}.spec`),
      containers: containerList(spec, 'containers', `${at}.spec`),
      ephemeralContainers: containerList(spec, 'ephemeralContainers', `${at}.spec`),
    },
  };
}
