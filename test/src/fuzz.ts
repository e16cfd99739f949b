// Inputs for the API fuzz test: a seeded generator of request bytes for any containerd message,
// from random noise through mutated plausible requests to well-formed but hostile ones. The
// same seed and method always give the same inputs, so a failure can be replayed.
import { codec, root } from '@berth/api';

type MessageType = ReturnType<typeof root.lookupType>;
type Field = MessageType['fieldsArray'][number];

/** mulberry32: small, fast, and the same everywhere. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seed per method, so adding a method or changing the count leaves the others' inputs alone. */
export function seedFor(seed: number, path: string): number {
  let h = seed >>> 0;
  for (let i = 0; i < path.length; i++) h = Math.imul(h ^ path.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export const modes = ['random', 'plausible', 'hostile-strings', 'missing-messages', 'missing-one', 'flipped', 'truncated', 'duplicated', 'huge-labels'] as const;
export type Mode = (typeof modes)[number];

export interface Input {
  mode: Mode;
  bytes: Uint8Array;
}

const digest = 'sha256:' + 'ab'.repeat(32);
const hostileStrings = [
  '', ' ', '/', '.', '..', 'a/b', '../../../etc/passwd', 'a\0b', '\0', '😀', 'é', 'x'.repeat(1000), 'a.b', '*', '>', '%2E',
  'sha256:', 'sha256:zz', digest.toUpperCase(), 'name==', '(', 'labels.k~="^(a+)+$"', 'name~=(a)\\1', '\uFFFF', '\uD800',
];

/** Namespaces a request may carry: none, valid ones, and ones containerd refuses. */
export const validNamespaces = ['fuzz', 'default', 'k8s.io'];
export const hostileNamespaces = [undefined, 'a/b', '..', '.', 'x'.repeat(1000), '-a', '%2E', 'a..b', 'A', '*', '>', ''];

export class Generator {
  private readonly rand: () => number;
  /** how many 'missing-one' inputs so far: each drops the next nested message in turn */
  private dropped = 0;

  constructor(seed: number) {
    this.rand = prng(seed);
  }

  /** The namespace header for an input: a valid one where the body is what is tested. */
  namespace(mode: Mode): string | undefined {
    if (mode === 'plausible' || mode === 'missing-one' || this.chance(0.4)) return this.pick(validNamespaces);
    return this.pick(hostileNamespaces);
  }

  private int(n: number): number {
    return Math.floor(this.rand() * n);
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  private chance(p: number): boolean {
    return this.rand() < p;
  }

  private randomBytes(max: number): Uint8Array {
    const b = new Uint8Array(this.int(max + 1));
    for (let i = 0; i < b.length; i++) b[i] = this.int(256);
    return b;
  }

  /** One input for a request of type `typeName`, in the given mode. */
  input(typeName: string, mode: Mode): Input {
    const type = root.lookupType(typeName);
    type.resolveAll();
    const encode = (o: Record<string, unknown>) => codec(typeName).encode(o);
    switch (mode) {
      case 'random':
        return { mode, bytes: this.randomBytes(200) };
      case 'plausible':
        return { mode, bytes: encode(this.message(type, {})) };
      case 'hostile-strings':
        return { mode, bytes: encode(this.message(type, { hostile: 0.5 })) };
      case 'missing-messages':
        return { mode, bytes: encode(this.message(type, { drop: 0.6 })) };
      case 'missing-one': {
        // exactly one nested message absent, each in turn: the handler that dereferences it
        // without looking is the typical bug
        const m = this.message(type, {});
        const holders = nestedMessages(type, m);
        if (holders.length) {
          const [obj, key] = holders[this.dropped++ % holders.length]!;
          obj[key] = null;
        }
        return { mode, bytes: encode(m) };
      }
      case 'huge-labels':
        return { mode, bytes: encode(this.message(type, { huge: true })) };
      case 'flipped': {
        const b = encode(this.message(type, {}));
        for (let n = 1 + this.int(4); n > 0 && b.length; n--) b[this.int(b.length)] ^= 1 << this.int(8);
        return { mode, bytes: b };
      }
      case 'truncated': {
        const b = encode(this.message(type, {}));
        return { mode, bytes: b.subarray(0, this.int(b.length + 1)) };
      }
      case 'duplicated': {
        // protobuf merges repeated occurrences: the same fields twice, or a slice of them again
        const a = encode(this.message(type, {}));
        const b = this.chance(0.5) ? encode(this.message(type, { hostile: 0.3 })) : a.subarray(this.int(a.length + 1));
        const out = new Uint8Array(a.length + b.length);
        out.set(a);
        out.set(b, a.length);
        return { mode, bytes: out };
      }
    }
  }

  private message(type: MessageType, o: { hostile?: number; drop?: number; huge?: boolean }, depth = 0): Record<string, unknown> {
    const m: Record<string, unknown> = {};
    if (type.fullName === '.google.protobuf.Any') {
      const ev = root.lookupType('containerd.events.ContainerCreate');
      return {
        type_url: o.hostile && this.chance(o.hostile) ? this.pick(hostileStrings) : 'containerd.events.ContainerCreate',
        value: this.chance(0.8) ? ev.encode(ev.fromObject({ id: 'fuzz', image: 'fuzz' })).finish() : this.randomBytes(40),
      };
    }
    for (const f of type.fieldsArray) {
      const v = this.field(f, o, depth);
      if (v !== undefined) m[f.name] = v;
    }
    return m;
  }

  private field(f: Field, o: { hostile?: number; drop?: number; huge?: boolean }, depth: number): unknown {
    const rt = f.resolvedType;
    if ((f as { map?: boolean }).map) {
      if (o.huge && f.name === 'labels') {
        return this.chance(0.5)
          ? Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`fuzz.label/${i}`, 'v'.repeat(50)]))
          : { k: 'v'.repeat(200 << 10) };
      }
      const key = o.hostile && this.chance(o.hostile) ? this.pick(hostileStrings) : 'fuzz.example/key';
      return { [key]: rt ? (this.single(f, o, depth) ?? {}) : this.scalar(f.type, f.name, o) };
    }
    if (f.repeated) {
      const n = this.int(3);
      // a missing element of a list is an empty message: the wire has no null
      return Array.from({ length: n }, () => this.single(f, o, depth) ?? {});
    }
    return this.single(f, o, depth);
  }

  private single(f: Field, o: { hostile?: number; drop?: number; huge?: boolean }, depth: number): unknown {
    const rt = f.resolvedType;
    if (rt && 'values' in rt) {
      const values = Object.values((rt as { values: Record<string, number> }).values);
      return this.chance(0.1) ? 99 : this.pick(values);
    }
    if (rt) {
      if (depth > 4 || (o.drop && this.chance(o.drop))) return null;
      return this.message(rt as MessageType, o, depth + 1);
    }
    return this.scalar(f.type, f.name, o);
  }

  private scalar(type: string, name: string, o: { hostile?: number }): unknown {
    switch (type) {
      case 'string':
        if (o.hostile && this.chance(o.hostile)) return this.pick(hostileStrings);
        return plausibleString(name);
      case 'bool':
        return this.chance(0.5);
      case 'bytes':
        return this.randomBytes(64);
      case 'double':
      case 'float':
        return this.pick([0, 1.5, -1, 1e300]);
      case 'int64':
      case 'sint64':
      case 'sfixed64':
        return this.pick([0, 1, 10, -1, 2 ** 53 - 1, -(2 ** 53)]);
      case 'uint64':
      case 'fixed64':
        return this.pick([0, 1, 10, 2 ** 53 - 1]);
      case 'int32':
      case 'sint32':
      case 'sfixed32':
        return this.pick([0, 1, -1, 2 ** 31 - 1]);
      default:
        return this.pick([0, 1, 2 ** 32 - 1]);
    }
  }
}

/** Every singular nested message of `m` (depth first), as its holder and key. */
function nestedMessages(type: MessageType, m: Record<string, unknown>): [Record<string, unknown>, string][] {
  const out: [Record<string, unknown>, string][] = [];
  for (const f of type.fieldsArray) {
    const v = m[f.name];
    if (f.repeated || (f as { map?: boolean }).map || !v || typeof v !== 'object' || !f.resolvedType || 'values' in f.resolvedType) continue;
    out.push([m, f.name]);
    if (f.resolvedType.fullName !== '.google.protobuf.Any') out.push(...nestedMessages(f.resolvedType as MessageType, v as Record<string, unknown>));
  }
  return out;
}

function plausibleString(name: string): string {
  if (name === 'digest' || name.endsWith('_digest')) return digest;
  if (name === 'topic') return '/fuzz/topic';
  if (name === 'media_type') return 'application/vnd.oci.image.manifest.v1+json';
  if (name === 'filters') return 'name==fuzz';
  if (name === 'namespace') return 'fuzz';
  if (name === 'type') return 'content';
  return 'fuzz';
}
