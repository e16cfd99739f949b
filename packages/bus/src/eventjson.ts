// Events as JSON for subscribers that do not speak protobuf (berth.json.events.<ns>.<topic>,
// published beside each event by whoever stores it: events.ts storeEvent): protobuf's canonical JSON mapping
// (RFC 3339 timestamps, base64 bytes, 64-bit integers as strings, enum names, Any expanded with
// its `@type`), keeping the proto field names (the mapping's `preserving_proto_field_name`).
import protobuf from 'protobufjs';
import { anyTypeName, root } from '@berth/api';

function timestampJson(v: { seconds: number | string; nanos: number }): string {
  const ms = Number(v.seconds) * 1000;
  const iso = new Date(ms).toISOString().replace(/\.\d{3}Z$/, '');
  const frac = v.nanos ? '.' + String(v.nanos).padStart(9, '0').replace(/0+$/, '') : '';
  return `${iso}${frac}Z`;
}

function valueJson(field: protobuf.Field, v: unknown): unknown {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Enum) return typeof v === 'number' ? (rt.valuesById[v] ?? v) : v;
  if (rt instanceof protobuf.Type) return messageJson(rt, v as Record<string, unknown>);
  switch (field.type) {
    case 'bytes':
      return Buffer.from(v as Uint8Array).toString('base64');
    case 'int64':
    case 'uint64':
    case 'sint64':
    case 'fixed64':
    case 'sfixed64':
      return String(v);
    default:
      return v;
  }
}

// the event types seen, by name: a lookup in the root walks its namespaces on every event
const types = new Map<string, protobuf.Type>();
function typeOf(name: string): protobuf.Type {
  let t = types.get(name);
  if (!t) types.set(name, (t = root.lookupType(name)));
  return t;
}

export function messageJson(type: protobuf.Type, m: Record<string, unknown> | null | undefined): unknown {
  if (m === null || m === undefined) return null;
  const name = type.fullName.replace(/^\./, '');
  if (name === 'google.protobuf.Timestamp') return timestampJson(m as { seconds: number; nanos: number });
  if (name === 'google.protobuf.Any') {
    const any = m as { type_url: string; value: Uint8Array };
    const inner = typeOf(anyTypeName(any));
    const decoded = inner.toObject(inner.decode(any.value), { longs: Number, defaults: false });
    const body = messageJson(inner, decoded);
    return typeof body === 'object' && body !== null && !Array.isArray(body) ? { '@type': any.type_url, ...body } : { '@type': any.type_url, value: body };
  }
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    field.resolve();
    const v = m[field.name];
    if (v === undefined || v === null) continue;
    if (field.map) {
      const entries = Object.entries(v as Record<string, unknown>);
      if (entries.length) out[field.name] = Object.fromEntries(entries.map(([k, x]) => [k, valueJson(field, x)]));
    } else if (field.repeated) {
      if ((v as unknown[]).length) out[field.name] = (v as unknown[]).map((x) => valueJson(field, x));
    } else {
      out[field.name] = valueJson(field, v);
    }
  }
  return out;
}

const envelopeType = root.lookupType('containerd.services.events.v1.Envelope');

/** The JSON form of an encoded envelope. */
export function envelopeJson(bytes: Uint8Array): string {
  const m = envelopeType.toObject(envelopeType.decode(bytes), { longs: Number, defaults: false });
  return JSON.stringify(messageJson(envelopeType, m));
}
