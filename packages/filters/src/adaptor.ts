import type { Adaptor } from "./filter.js";

export type FieldFunc = (path: string[]) => string | undefined;

export interface AdaptOptions {
  /**
   * Property names (at any depth) holding string maps such as labels. The
   * rest of the path is joined with "." into one key, as containerd does, so
   * `labels.com.example.x` and `labels."com.example.x"` look up the same
   * entry; entries count as present even when their value is "".
   * Default: ["labels", "annotations"].
   */
  maps?: readonly string[];
  /**
   * Custom resolution for top-level fields, given the rest of the path.
   * Takes precedence over the object's own properties; use it for computed
   * or renamed fields.
   */
  fields?: Readonly<Record<string, FieldFunc>>;
}

/** Wrap a plain function as an Adaptor. */
export function adaptFunc(fn: FieldFunc): Adaptor {
  return { field: fn };
}

/**
 * Build an Adaptor over a plain object: nested objects are walked one path
 * segment at a time, numbers/booleans/bigints are stringified, and a nested
 * value that is itself an Adaptor receives the remaining path (handy for
 * envelopes wrapping a typed event). Empty strings, null, undefined and
 * paths ending on an object are absent, matching containerd's adaptors
 * which report scalar fields present only when non-empty.
 */
export function adaptObject(obj: object, options: AdaptOptions = {}): Adaptor {
  const maps = new Set(options.maps ?? ["labels", "annotations"]);
  const fields = options.fields ?? {};
  return {
    field(path) {
      if (path.length === 0) return undefined;
      const [head, ...rest] = path as [string, ...string[]];
      if (Object.hasOwn(fields, head)) return fields[head]!(rest);
      return walk(obj, path, maps);
    },
  };
}

function walk(node: unknown, path: string[], maps: ReadonlySet<string>): string | undefined {
  for (let i = 0; i < path.length; i++) {
    if (isAdaptor(node)) return node.field(path.slice(i));
    if (typeof node !== "object" || node === null) return undefined;
    const key = path[i]!;
    if (!Object.hasOwn(node, key)) return undefined;
    const child = (node as Record<string, unknown>)[key];
    if (maps.has(key) && i + 1 < path.length) {
      return lookupMap(child, path.slice(i + 1).join("."));
    }
    node = child;
  }
  const s = scalar(node);
  return s === "" ? undefined : s;
}

function lookupMap(map: unknown, key: string): string | undefined {
  if (map instanceof Map) return map.has(key) ? scalar(map.get(key)) : undefined;
  if (typeof map !== "object" || map === null || !Object.hasOwn(map, key)) return undefined;
  return scalar((map as Record<string, unknown>)[key]);
}

function scalar(v: unknown): string | undefined {
  switch (typeof v) {
    case "string":
      return v;
    case "number":
    case "boolean":
    case "bigint":
      return String(v);
    default:
      return undefined;
  }
}

function isAdaptor(v: unknown): v is Adaptor {
  return typeof v === "object" && v !== null && typeof (v as Adaptor).field === "function";
}
