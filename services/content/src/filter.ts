// What containerd's filter language can ask of content and of ingests: the same field paths
// containerd's adaptors answer (content: `digest`, `labels.<key>`; `size` is accepted and never
// matches, as in containerd; ingests: `ref`).
import { parseAll } from '@berth/filters';
import type { Labels } from './store.js';

export interface Matcher {
  match(value: { digest?: string; labels?: Labels; ref?: string }): boolean;
}

/** Parses filters up front, so a malformed one fails the call even when nothing is listed. */
export function contentFilter(filters: string[]): Matcher {
  const f = parseAll(filters);
  return {
    match: (info) =>
      f.match({
        field(path: string[]): string | undefined {
          switch (path[0]) {
            case 'digest':
              return info.digest;
            case 'labels': {
              // a label key may itself contain dots: the rest of the path is the key
              const labels = info.labels ?? {};
              const key = path.slice(1).join('.');
              return Object.hasOwn(labels, key) ? labels[key] : undefined;
            }
            default:
              return undefined;
          }
        },
      }),
  };
}

export function statusFilter(filters: string[]): Matcher {
  const f = parseAll(filters);
  return {
    match: (st) => f.match({ field: (path: string[]) => (path[0] === 'ref' && path.length >= 1 ? st.ref : undefined) }),
  };
}
