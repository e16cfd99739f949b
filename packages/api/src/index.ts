// The containerd 1.6 API as data: the protobufjs descriptor generated at build time from
// Debian's .proto files (scripts/gen.mjs), codecs that turn wire bytes into plain objects and
// back, the gRPC service table, and google.protobuf.Any as containerd writes it.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);
const descriptorPath = require.resolve('../generated/containerd.json');

/** Every containerd message, service and enum, by full name. */
export const root: protobuf.Root = protobuf.Root.fromJSON(JSON.parse(readFileSync(descriptorPath, 'utf8')));

// Decoded messages look like proto-loader's (and the generated `__Output` types): proto field
// names, 64-bit integers as numbers, enums as their names, every field present.
const toObjectOptions: protobuf.IConversionOptions = { longs: Number, enums: String, defaults: true, oneofs: true, arrays: true, objects: true };

export interface Codec<T = any> {
  readonly name: string;
  encode(message: Partial<T> | Record<string, unknown>): Uint8Array;
  decode(bytes: Uint8Array): T;
}

const codecs = new Map<string, Codec>();

/** The codec for a message by its full name, e.g. `containerd.services.namespaces.v1.Namespace`. */
export function codec<T = any>(fullName: string): Codec<T> {
  let c = codecs.get(fullName);
  if (!c) {
    const type = root.lookupType(fullName);
    c = {
      name: fullName,
      encode: (m) => type.encode(type.fromObject(m as Record<string, unknown>)).finish(),
      decode: (b) => type.toObject(type.decode(b), toObjectOptions),
    };
    codecs.set(fullName, c);
  }
  return c as Codec<T>;
}

export interface MethodInfo {
  /** gRPC path: `/containerd.services.content.v1.Content/Read` */
  readonly path: string;
  readonly service: string;
  readonly name: string;
  readonly requestType: string;
  readonly responseType: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}

export interface ServiceInfo {
  readonly fullName: string;
  readonly methods: readonly MethodInfo[];
}

function collectServices(ns: protobuf.NamespaceBase, out: ServiceInfo[]): ServiceInfo[] {
  for (const child of ns.nestedArray) {
    if (child instanceof protobuf.Service) {
      const fullName = child.fullName.replace(/^\./, '');
      out.push({
        fullName,
        methods: child.methodsArray.map((m) => {
          m.resolve();
          return {
            path: `/${fullName}/${m.name}`,
            service: fullName,
            name: m.name,
            requestType: m.resolvedRequestType!.fullName.replace(/^\./, ''),
            responseType: m.resolvedResponseType!.fullName.replace(/^\./, ''),
            requestStream: !!m.requestStream,
            responseStream: !!m.responseStream,
          };
        }),
      });
    } else if (child instanceof protobuf.Namespace) {
      collectServices(child, out);
    }
  }
  return out;
}

/** Every gRPC service in the descriptor (containerd's API, the shim's Task, ttrpc events). */
export const services: readonly ServiceInfo[] = collectServices(root, []);

export function service(fullName: string): ServiceInfo {
  const s = services.find((x) => x.fullName === fullName);
  if (!s) throw new Error(`unknown service ${fullName}`);
  return s;
}

export function method(path: string): MethodInfo {
  const [svc, name] = path.replace(/^\//, '').split('/');
  const m = service(svc!).methods.find((x) => x.name === name);
  if (!m) throw new Error(`unknown method ${path}`);
  return m;
}


export * from './any.js';
export * from './timestamp.js';
