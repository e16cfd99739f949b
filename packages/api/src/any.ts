// google.protobuf.Any the way containerd writes it (typeurl): a protobuf message's type URL is
// its bare full name (`containerd.events.TaskExit`, no `type.googleapis.com/` prefix), and the
// OCI runtime spec travels as JSON under its own URL.
import { codec } from './index.js';

export interface Any {
  type_url: string;
  value: Uint8Array;
}

export const runtimeSpecTypeUrl = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';

/** Packs a message (as a plain object) of the given full type name. */
export function toAny(typeName: string, message: Record<string, unknown>): Any {
  return { type_url: typeName, value: codec(typeName).encode(message) };
}

/** The message name an Any holds, whichever URL form was used. */
export function anyTypeName(any: Pick<Any, 'type_url'>): string {
  const url = any.type_url;
  return url.slice(url.lastIndexOf('/') + 1);
}

/** Unpacks an Any holding a protobuf message we know. */
export function fromAny<T = any>(any: Any): T {
  return codec<T>(anyTypeName(any)).decode(any.value);
}

export function specToAny(spec: unknown): Any {
  return { type_url: runtimeSpecTypeUrl, value: Buffer.from(JSON.stringify(spec)) };
}

export function specFromAny<T = any>(any: Any): T {
  if (any.type_url !== runtimeSpecTypeUrl) throw new Error(`not a runtime spec: ${any.type_url}`);
  return JSON.parse(Buffer.from(any.value).toString('utf8')) as T;
}
