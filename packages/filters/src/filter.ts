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
    private readonly re?: RegExp,
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

/**
 * Compile a containerd (Go RE2) pattern as a JS RegExp. Differences worth
 * knowing: RE2 has no backreferences or lookaround (JS accepts them, a
 * superset); RE2's `\A`, `\z`, `(?U)` and inline flags other than a leading
 * `(?ims)` group are not translated and either fail or mean something else.
 * Unicode mode is tried first so `.` and classes work on code points like
 * RE2; legacy mode is the fallback because RE2 also allows escaping any
 * punctuation (`\:`), which Unicode-mode JS rejects.
 */
export function compileRegExp(pattern: string): RegExp {
  let flags = "";
  const lead = /^\(\?([ims]+)\)/.exec(pattern);
  if (lead) {
    flags = lead[1]!;
    pattern = pattern.slice(lead[0].length);
  }
  // RE2 spells named groups (?P<name>...); JS only knows (?<name>...).
  pattern = pattern.replace(/\(\?P</g, "(?<");
  try {
    return new RegExp(pattern, flags + "u");
  } catch {
    return new RegExp(pattern, flags);
  }
}
