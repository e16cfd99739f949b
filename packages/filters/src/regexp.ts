import { createRequire } from "node:module";
import type { RE2JS as RE2JSClass } from "re2js";

// loaded on the first `~=` filter: most processes never see one, and the engine is the largest
// module a filter needs (about 2.5 MB of a process's RSS once loaded)
let engine: typeof RE2JSClass | undefined;
function re2(): typeof RE2JSClass {
  return (engine ??= (createRequire(import.meta.url)("re2js") as { RE2JS: typeof RE2JSClass }).RE2JS);
}

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
  const re = re2().compile(pattern);
  return { test: (value) => re.test(value) };
}
