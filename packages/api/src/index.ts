// The containerd 1.6 API as data: the protobufjs descriptor generated at build time from
// Debian's .proto files (scripts/gen.mjs), codecs that turn wire bytes into plain objects and
// back, the gRPC service table, and google.protobuf.Any as containerd writes it.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);
const descriptorPath = require.resolve('../generated/containerd.json');

/** The descriptor's JSON form, as protobufjs writes it. */
interface JsonNode {
  nested?: Record<string, JsonNode>;
  fields?: Record<string, { type: string }>;
  values?: Record<string, number>;
  methods?: Record<string, { requestType: string; responseType: string; requestStream?: boolean; responseStream?: boolean }>;
}

const descriptor = JSON.parse(readFileSync(descriptorPath, 'utf8')) as JsonNode;

function at(path: readonly string[]): JsonNode | undefined {
  let n: JsonNode | undefined = descriptor;
  for (const p of path) n = n?.nested?.[p];
  return n;
}

/** A type name as a .proto writes it, resolved from the scope it is written in (innermost first). */
function resolveName(scope: readonly string[], name: string): string | undefined {
  if (name.startsWith('.')) return at(name.slice(1).split('.')) ? name.slice(1) : undefined;
  const parts = name.split('.');
  for (let i = scope.length; i >= 0; i--) {
    const path = [...scope.slice(0, i), ...parts];
    if (at(path)) return path.join('.');
  }
  return undefined;
}

const scalars = new Set(['double', 'float', 'int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'fixed32', 'fixed64', 'sfixed32', 'sfixed64', 'bool', 'string', 'bytes']);

/** The full names a message, enum or service (with its nested types) refers to. */
function references(n: JsonNode, scope: string[], out: string[] = []): string[] {
  for (const f of Object.values(n.fields ?? {})) {
    if (scalars.has(f.type)) continue;
    const r = resolveName(scope, f.type);
    if (r) out.push(r);
  }
  for (const m of Object.values(n.methods ?? {})) {
    for (const t of [m.requestType, m.responseType]) {
      const r = resolveName(scope, t);
      if (r) out.push(r);
    }
  }
  for (const [name, child] of Object.entries(n.nested ?? {})) references(child, [...scope, name], out);
  return out;
}

/**
 * Every containerd message, service and enum, by full name. Built as used: a type joins the root
 * (with everything it refers to) the first time it is looked up, so a process holds the messages
 * it speaks rather than the whole API (all of it cost each process ~1.5 MB of heap).
 */
export const root: protobuf.Root = new protobuf.Root();
const added = new Set<string>();

/** Adds the top-level message, enum or service holding `fullName`, and what it refers to. */
function add(fullName: string, pending: string[]): void {
  const parts = fullName.split('.');
  let n: JsonNode | undefined = descriptor;
  for (let i = 0; i < parts.length && n; i++) {
    n = n.nested?.[parts[i]!];
    if (n && (n.fields || n.values || n.methods)) {
      const unit = parts.slice(0, i + 1);
      const key = unit.join('.');
      if (added.has(key)) return;
      added.add(key);
      // the descriptor's shape, holding only this unit: protobufjs merges it into the namespaces
      let json: Record<string, unknown> = { [parts[i]!]: n };
      for (let j = i - 1; j >= 0; j--) json = { [parts[j]!]: { nested: json } };
      root.addJSON(json as Record<string, protobuf.AnyNestedObject>);
      pending.push(...references(n, unit));
      return;
    }
  }
}

function load(fullName: string): void {
  const name = fullName.replace(/^\./, '');
  if (added.has(name)) return;
  const pending = [name];
  const before = added.size;
  while (pending.length) add(pending.pop()!, pending);
  // resolved once all of it is there: a type refers to others by name
  if (added.size !== before) root.resolveAll();
}

const lookupType = root.lookupType.bind(root);
root.lookupType = (path: string | string[]) => {
  load(typeof path === 'string' ? path : path.join('.'));
  return lookupType(path);
};

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
    warmCodecs([fullName]);
  }
  return c as Codec<T>;
}

/**
 * Readies the codecs of these messages and of every message they hold, in the background:
 * protobufjs writes a type's encoder, decoder and converters the first time it is used (1-4 ms
 * each, measured), so a process paid that on its first call of each kind (a stack's first
 * `ctr run` took 433 ms against 190 for the next). Every codec() made is queued this way, so
 * what a process declares at its start is ready before its first call. The queue is worked only
 * in a process that asks for it (readyCodecsInBackground: the services and the shim host), not
 * in a short-lived one such as the CLI. One type per turn of the event loop: a call arriving
 * meanwhile waits for one type at most.
 */
export function warmCodecs(fullNames: Iterable<string>): void {
  for (const n of fullNames) warmQueue.push(n);
  kickWarming();
}

/** Works the queue of warmCodecs from now on: for long-lived processes. */
export function readyCodecsInBackground(): void {
  warmingOn = true;
  kickWarming();
}

function kickWarming(): void {
  if (warmingOn && !warming && warmQueue.length) {
    warming = true;
    setImmediate(warmSlice);
  }
}

let warmingOn = false;
const warmQueue: string[] = [];
const warmed = new Set<protobuf.Type>();
let warming = false;

function warmSlice(): void {
  const name = warmQueue.pop();
  if (name === undefined) {
    warming = false;
    return;
  }
  try {
    const walk = (t: protobuf.Type): void => {
      if (warmed.has(t)) return;
      warmed.add(t);
      t.setup();
      for (const f of t.fieldsArray) {
        const r = f.resolve().resolvedType;
        if (r instanceof protobuf.Type) walk(r);
      }
    };
    walk(root.lookupType(name));
    const c = codec(name);
    c.decode(c.encode({}));
  } catch {
    // not a message of the API: nothing to ready
  }
  setImmediate(warmSlice);
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

function collectServices(n: JsonNode, path: string[], out: ServiceInfo[]): ServiceInfo[] {
  for (const [name, child] of Object.entries(n.nested ?? {})) {
    const p = [...path, name];
    if (child.methods) {
      const fullName = p.join('.');
      out.push({
        fullName,
        methods: Object.entries(child.methods).map(([m, d]) => ({
          path: `/${fullName}/${m}`,
          service: fullName,
          name: m,
          requestType: resolveName(p, d.requestType)!,
          responseType: resolveName(p, d.responseType)!,
          requestStream: !!d.requestStream,
          responseStream: !!d.responseStream,
        })),
      });
    } else if (!child.fields && !child.values) {
      collectServices(child, p, out);
    }
  }
  return out;
}

/** Every gRPC service in the descriptor (containerd's API, the shim's Task, ttrpc events). */
export const services: readonly ServiceInfo[] = collectServices(descriptor, [], []);

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
