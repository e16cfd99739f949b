// Filter field paths over an envelope, as containerd resolves them: `namespace`, `topic`, and
// `event.<field>` inside the event the envelope carries (string fields, nested messages and
// string maps such as labels; other kinds do not match, as in containerd).
import { fromAny } from '@berth/api';
import type { Envelope } from './events.js';

function lookup(v: unknown, path: string[]): string | undefined {
  let cur = v;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return typeof cur === 'string' ? cur : undefined;
}

export function envelopeAdaptor(e: Envelope): { field(path: string[]): string | undefined } {
  let event: unknown;
  let decoded = false;
  return {
    field(path) {
      const [head, ...rest] = path;
      switch (head) {
        case 'namespace':
          return rest.length ? undefined : e.namespace;
        case 'topic':
          return rest.length ? undefined : e.topic;
        case 'event':
          if (!rest.length) return undefined;
          if (!decoded) {
            decoded = true;
            try {
              event = fromAny(e.event);
            } catch {
              event = undefined; // a type we do not know: no event fields match
            }
          }
          return lookup(event, rest);
        default:
          return undefined;
      }
    },
  };
}
