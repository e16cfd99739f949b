// Store keys are `/`-separated paths. A part that comes from a caller (a lease id, an image name,
// a ref) may hold `/` itself, and then `lease/a` would be a prefix of `lease/a/b`'s records: so
// every part is escaped here, in one place, before it becomes part of a key.

/** One key from its parts: `key('lease', ns, id)` → `lease/<ns>/<id>`, each part escaped. */
export function key(...parts: string[]): string {
  return parts.map(escapePart).join('/');
}

/** The prefix under which every key starting with these parts lies (`key(...) + '/'`). */
export function prefix(...parts: string[]): string {
  return key(...parts) + '/';
}

// `%` first, so an escaped part never reads as another part's escape; NUL and `/` are the
// separators a reader could trip on.
const unsafe = /[%/\u0000]/g;

export function escapePart(s: string): string {
  return s.replace(unsafe, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'));
}

export function unescapePart(s: string): string {
  return s.replace(/%([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}
