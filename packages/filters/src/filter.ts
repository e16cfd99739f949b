import type { Pattern } from "./regexp.js";

/**
 * Resolves a field path (e.g. ["labels", "com.example.x"]) against some
 * object. `undefined` means the field is absent; by containerd convention
 * adaptors report empty scalar fields as absent but map entries as present
 * even when their value is "".
 */
export interface Adaptor {
  field(path: string[]): string | undefined;
}

export interface Filter {
  match(adaptor: Adaptor): boolean;
}

export type Operator = "present" | "==" | "!=" | "~=";

export const always: Filter = Object.freeze({ match: () => true });

/** Matches when at least one of `filters` matches (none: never). */
export function any(filters: readonly Filter[]): Filter {
  return { match: (a) => filters.some((f) => f.match(a)) };
}

/** Matches when every one of `filters` matches (none: always). */
export function all(filters: readonly Filter[]): Filter {
  return { match: (a) => filters.every((f) => f.match(a)) };
}

export class Selector implements Filter {
  constructor(
    readonly path: readonly string[],
    readonly operator: Operator,
    readonly value = "",
    private readonly re?: Pattern,
  ) {}

  match(adaptor: Adaptor): boolean {
    const v = adaptor.field([...this.path]);
    switch (this.operator) {
      case "present":
        return v !== undefined;
      case "==":
        return v !== undefined && v === this.value;
      // containerd compares an absent field as "", so `!=` matches objects
      // lacking the field and `~=` can match them too (e.g. `x~=^$`).
      case "!=":
        return (v ?? "") !== this.value;
      case "~=":
        return this.re!.test(v ?? "");
    }
  }
}
