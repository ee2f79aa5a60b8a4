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

type Unary<Req, Res> = (req: Req, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: Res) => void) => grpc.ClientUnaryCall;
type ServerStream<Req> = (req: Req, md: grpc.Metadata) => grpc.ClientReadableStream<unknown>;

interface ImagesClient extends grpc.Client {
  Get: Unary<{ name: string }, { image: ImageRecord }>;
  List: Unary<{ filters: string[] }, { images: ImageRecord[] }>;
}

interface ContentClient extends grpc.Client {
  Info: Unary<{ digest: string }, { info: ContentInfo }>;
  Read: ServerStream<{ digest: string; offset: number; size: number }>;
  List: ServerStream<{ filters: string[] }>;
}

const LOADER_OPTIONS: protoLoader.Options = { longs: Number, defaults: true, enums: String };

// Loaded once per process: both protos are tiny, and every client shares them.
let services: { Images: grpc.ServiceClientConstructor; Content: grpc.ServiceClientConstructor } | undefined;
function loadServices() {
  if (services === undefined) {
    const dir = new URL('./proto/', import.meta.url).pathname;
    const images = grpc.loadPackageDefinition(protoLoader.loadSync(`${dir}images.proto`, LOADER_OPTIONS));
    const content = grpc.loadPackageDefinition(protoLoader.loadSync(`${dir}content.proto`, LOADER_OPTIONS));
    services = {
      Images: pick(images, 'containerd.services.images.v1.Images'),
      Content: pick(content, 'containerd.services.content.v1.Content'),
    };
  }
  return services;
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
  readonly #metadata: grpc.Metadata;

  constructor(init: ContainerdClientInit) {
    const { Images, Content } = loadServices();
    const target = `unix://${init.socket}`;
    const credentials = grpc.credentials.createInsecure();
    // Content.Read sends 1 MiB chunks; allow headroom over the 4 MiB default for List answers.
    const options: grpc.ChannelOptions = { 'grpc.max_receive_message_length': 64 * 1024 * 1024 };
    this.#images = new Images(target, credentials, options) as unknown as ImagesClient;
    // One channel for both services: same socket.
    this.#content = new Content(target, credentials, { ...options, channelOverride: this.#images.getChannel() }) as unknown as ContentClient;
    this.#metadata = new grpc.Metadata();
    this.#metadata.set('containerd-namespace', init.namespace);
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

  close(): void {
    this.#images.close();
    this.#content.close();
  }
}
