import { RE2JS } from "re2js";

/** A compiled `~=` pattern: unanchored search, like Go's `MatchString`. */
export interface Pattern {
  test(value: string): boolean;
}

/**
 * Compile a containerd pattern with RE2 semantics: matching runs in time
 * linear in the input, because a filter is user input evaluated on every
 * event. RE2 syntax only (no backreferences or lookaround), as Go's regexp
 * that containerd uses; re2js's lookbehind extension stays off.
 *
 * Throws an Error whose message is the engine's syntax error, worded as Go's
 * `regexp.Compile` words it (`error parsing regexp: missing closing ): ...`).
 */
export function compilePattern(pattern: string): Pattern {
  const re = RE2JS.compile(pattern);
  return { test: (value) => re.test(value) };
}
