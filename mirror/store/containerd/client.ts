/**
 * A small typed client for the parts of containerd's gRPC API Shoal uses,
 * over its unix socket, with the namespace in the `containerd-namespace` metadata.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export interface ContainerdClientInit {
  /** Path of containerd's gRPC socket. */
  socket: string;
  /** containerd namespace; the CRI plugin's is `k8s.io`. */
  namespace: string;
}

export interface ImageRecord {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly target: { readonly mediaType: string; readonly digest: string; readonly size: number };
}

export interface ContentInfo {
  readonly digest: string;
  readonly size: number;
  readonly labels: Readonly<Record<string, string>>;
}

/** The event payloads Shoal reads, decoded. */
export type ContainerdEventPayload =
  | { readonly type: 'image-create' | 'image-update'; readonly name: string; readonly labels: Readonly<Record<string, string>> }
  | { readonly type: 'image-delete'; readonly name: string }
  /** containerd >= 2.1 only. */
  | { readonly type: 'content-create'; readonly digest: string; readonly size: number }
  | { readonly type: 'content-delete'; readonly digest: string };

/** One envelope from containerd's event stream. */
export interface ContainerdEvent {
  readonly timestamp: Date | undefined;
  /** The namespace the event happened in: the stream carries every namespace's events. */
  readonly namespace: string;
  /** `/images/create`, `/content/delete`, ... */
  readonly topic: string;
  /** The payload's full message name, bare: `containerd.services.images.v1.ImageCreate`, `containerd.events.ContentDelete`. */
  readonly typeUrl: string;
  /** The payload's protobuf bytes. */
  readonly payload: Buffer;
  /** The payload decoded, for the types in ContainerdEventPayload; undefined for any other. */
  readonly decoded: ContainerdEventPayload | undefined;
}

type Unary<Req, Res> = (req: Req, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: Res) => void) => grpc.ClientUnaryCall;
type ServerStream<Req> = (req: Req, md: grpc.Metadata) => grpc.ClientReadableStream<unknown>;

interface ImagesClient extends grpc.Client {
  Get: Unary<{ name: string }, { image: ImageRecord }>;
  List: Unary<{ filters: string[] }, { images: ImageRecord[] }>;
}

export interface IngestStatus {
  readonly ref: string;
  readonly offset: number;
  readonly total: number;
  /** The digest the finished content must have. */
  readonly expected: string;
}

interface ContentClient extends grpc.Client {
  ListStatuses: Unary<{ filters: string[] }, { statuses: IngestStatus[] }>;
  Abort: Unary<{ ref: string }, object>;
  Info: Unary<{ digest: string }, { info: ContentInfo }>;
  Read: ServerStream<{ digest: string; offset: number; size: number }>;
  List: ServerStream<{ filters: string[] }>;
}

interface EventsClient extends grpc.Client {
  Subscribe: ServerStream<{ filters: string[] }>;
}

/** An Envelope as the loader decodes it (camelCase fields, int64 as number). */
interface EnvelopeMessage {
  timestamp: { seconds: number; nanos: number } | null;
  namespace: string;
  topic: string;
  event: { typeUrl: string; value: Buffer } | null;
}

type PayloadDecoder = (bytes: Buffer) => ContainerdEventPayload;

const LOADER_OPTIONS: protoLoader.Options = { longs: Number, defaults: true, enums: String };

// Loaded once per process: the protos are tiny, and every client shares them.
let services:
  | {
      Images: grpc.ServiceClientConstructor;
      Content: grpc.ServiceClientConstructor;
      Events: grpc.ServiceClientConstructor;
      payloads: ReadonlyMap<string, PayloadDecoder>;
    }
  | undefined;
function loadServices() {
  if (services === undefined) {
    const dir = new URL('./proto/', import.meta.url).pathname;
    const images = grpc.loadPackageDefinition(protoLoader.loadSync(`${dir}images.proto`, LOADER_OPTIONS));
    const content = grpc.loadPackageDefinition(protoLoader.loadSync(`${dir}content.proto`, LOADER_OPTIONS));
    const eventsDefinition = protoLoader.loadSync(`${dir}events.proto`, LOADER_OPTIONS);
    services = {
      Images: pick(images, 'containerd.services.images.v1.Images'),
      Content: pick(content, 'containerd.services.content.v1.Content'),
      Events: pick(grpc.loadPackageDefinition(eventsDefinition), 'containerd.services.events.v1.Events'),
      payloads: payloadDecoders(eventsDefinition),
    };
  }
  return services;
}

/** Decoders by the type_url containerd sends; our message names differ from containerd's, the field numbers do not. */
function payloadDecoders(definition: protoLoader.PackageDefinition): ReadonlyMap<string, PayloadDecoder> {
  const decoder = <T>(message: string): ((bytes: Buffer) => T) => {
    const type = definition[`containerd.services.events.v1.${message}`] as protoLoader.MessageTypeDefinition<object, T>;
    return (bytes) => type.deserialize(bytes);
  };
  type ImageFields = { name: string; labels: Record<string, string> };
  const imageCreate = decoder<ImageFields>('ImageCreate');
  const imageUpdate = decoder<ImageFields>('ImageUpdate');
  const imageDelete = decoder<{ name: string }>('ImageDelete');
  const contentCreate = decoder<{ digest: string; size: number }>('ContentCreate');
  const contentDelete = decoder<{ digest: string }>('ContentDelete');
  return new Map<string, PayloadDecoder>([
    ['containerd.services.images.v1.ImageCreate', (b) => ({ type: 'image-create', ...imageCreate(b) })],
    ['containerd.services.images.v1.ImageUpdate', (b) => ({ type: 'image-update', ...imageUpdate(b) })],
    ['containerd.services.images.v1.ImageDelete', (b) => ({ type: 'image-delete', ...imageDelete(b) })],
    // Content events live in containerd's `containerd.events` package, unlike image events.
    ['containerd.events.ContentCreate', (b) => ({ type: 'content-create', ...contentCreate(b) })],
    ['containerd.events.ContentDelete', (b) => ({ type: 'content-delete', ...contentDelete(b) })],
  ]);
}

function pick(root: grpc.GrpcObject, path: string): grpc.ServiceClientConstructor {
  let node: unknown = root;
  for (const part of path.split('.')) node = (node as Record<string, unknown>)[part];
  return node as grpc.ServiceClientConstructor;
}

export function isNotFound(err: unknown): boolean {
  return (err as grpc.ServiceError | undefined)?.code === grpc.status.NOT_FOUND;
}

export class ContainerdClient {
  readonly #images: ImagesClient;
  readonly #content: ContentClient;
  readonly #events: EventsClient;
  readonly #payloads: ReadonlyMap<string, PayloadDecoder>;
  readonly #metadata: grpc.Metadata;
  /** The namespace every call but subscribe() is scoped to. */
  readonly namespace: string;

  constructor(init: ContainerdClientInit) {
    const { Images, Content, Events, payloads } = loadServices();
    const target = `unix://${init.socket}`;
    const credentials = grpc.credentials.createInsecure();
    // Content.Read sends 1 MiB chunks; allow headroom over the 4 MiB default for List answers.
    // After containerd restarts, calls fail fast until the channel's next reconnect attempt;
    // grpc's default backoff grows to 120 s (measured: 12.5 s lost after a 30 s outage). A
    // unix socket is cheap to retry.
    const options: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // HTTP/2's default 64 KiB flow-control window stalls each 1 MiB Content.Read message
      // on window updates (measured: ~250 MiB/s); a wide window lets containerd stream.
      'grpc-node.flow_control_window': 16 * 1024 * 1024,
      'grpc.max_reconnect_backoff_ms': 5000,
    };
    this.#images = new Images(target, credentials, options) as unknown as ImagesClient;
    // One channel for every service: same socket.
    this.#content = new Content(target, credentials, { ...options, channelOverride: this.#images.getChannel() }) as unknown as ContentClient;
    this.#events = new Events(target, credentials, { ...options, channelOverride: this.#images.getChannel() }) as unknown as EventsClient;
    this.#payloads = payloads;
    this.#metadata = new grpc.Metadata();
    this.#metadata.set('containerd-namespace', init.namespace);
    this.namespace = init.namespace;
  }

  /** The image record, or undefined when containerd has no image of that name. */
  getImage(name: string): Promise<ImageRecord | undefined> {
    return new Promise((resolve, reject) => {
      this.#images.Get({ name }, this.#metadata, (err, res) => {
        if (err) return isNotFound(err) ? resolve(undefined) : reject(err);
        resolve(res.image);
      });
    });
  }

  listImages(filters: string[] = []): Promise<ImageRecord[]> {
    return new Promise((resolve, reject) => {
      this.#images.List({ filters }, this.#metadata, (err, res) => (err ? reject(err) : resolve(res.images)));
    });
  }

  /** Unfinished writes (ingests) in the namespace. */
  listIngests(): Promise<IngestStatus[]> {
    return new Promise((resolve, reject) => {
      this.#content.ListStatuses({ filters: [] }, this.#metadata, (err, res) => (err ? reject(err) : resolve(res.statuses)));
    });
  }

  /** Drops an unfinished write; absent already is fine. */
  abortIngest(ref: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#content.Abort({ ref }, this.#metadata, (err) => (err && !isNotFound(err) ? reject(err) : resolve()));
    });
  }

  /** Content info, or undefined when the content store does not hold the digest. */
  contentInfo(digest: string): Promise<ContentInfo | undefined> {
    return new Promise((resolve, reject) => {
      this.#content.Info({ digest }, this.#metadata, (err, res) => {
        if (err) return isNotFound(err) ? resolve(undefined) : reject(err);
        resolve(res.info);
      });
    });
  }

  /** Streams a content from offset to its end (containerd sends 1 MiB messages). */
  async *readContent(digest: string, offset = 0): AsyncGenerator<Buffer> {
    const call = this.#content.Read({ digest, offset, size: 0 }, this.#metadata);
    try {
      for await (const msg of call) yield (msg as { data: Buffer }).data;
    } finally {
      call.cancel();
    }
  }

  async *listContent(filters: string[] = []): AsyncGenerator<ContentInfo> {
    const call = this.#content.List({ filters }, this.#metadata);
    for await (const msg of call) yield* (msg as { info: ContentInfo[] }).info;
  }

  /**
   * containerd's event stream, every namespace's events (filter on `namespace==...`).
   * `filters` are containerd filter expressions: within one, `,` means and; the
   * list means or. Ends without error when the signal aborts; fails when the
   * stream breaks (containerd stopped): subscribe again, and expect events missed.
   */
  async *subscribe(filters: string[], signal?: AbortSignal): AsyncGenerator<ContainerdEvent> {
    if (signal?.aborted) return;
    const call = this.#events.Subscribe({ filters }, this.#metadata);
    const cancel = () => call.cancel();
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      for await (const msg of call) yield this.#decodeEnvelope(msg as EnvelopeMessage);
    } catch (err) {
      if (signal?.aborted) return;
      throw err;
    } finally {
      signal?.removeEventListener('abort', cancel);
      call.cancel();
    }
  }

  #decodeEnvelope(msg: EnvelopeMessage): ContainerdEvent {
    const typeUrl = msg.event?.typeUrl ?? '';
    const payload = msg.event?.value ?? Buffer.alloc(0);
    let decoded: ContainerdEventPayload | undefined;
    try {
      decoded = this.#payloads.get(typeUrl)?.(payload);
    } catch {
      // A payload that does not decode is passed on raw, like an unknown type.
      decoded = undefined;
    }
    const timestamp = msg.timestamp ? new Date(msg.timestamp.seconds * 1000 + Math.floor(msg.timestamp.nanos / 1e6)) : undefined;
    return { timestamp, namespace: msg.namespace, topic: msg.topic, typeUrl, payload, decoded };
  }

  close(): void {
    this.#images.close();
    this.#content.close();
    this.#events.close();
  }
}
