// Subject names. A containerd identifier may contain `.` (namespace `k8s.io`), and NATS splits
// subjects at `.`, so anything user-given is escaped before it becomes a token: `.`, `*`, `>`,
// `%` and whitespace become `%XX`. The escape is reversible and leaves common names readable.

const unsafe = /[.*>%\s]/g;

export function token(s: string): string {
  if (s === '') return '%';
  return s.replace(unsafe, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'));
}

export function untoken(t: string): string {
  if (t === '%') return '';
  return t.replace(/%([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** `berth.<node>.<service>.v1.<Method>`: one subject per RPC, on one node. */
export function rpcSubject(node: string, service: string, method: string, version = 'v1'): string {
  return `berth.${token(node)}.${service}.${version}.${method}`;
}

/**
 * `berth.events.<namespace>.<topic tokens>`: `/tasks/exit` in `k8s.io` is
 * `berth.events.k8s%2Eio.tasks.exit`. Subscribe to `berth.events.*.tasks.>` and the like.
 */
export function eventSubject(namespace: string, topic: string): string {
  const parts = topic.split('/').filter((p) => p !== '').map(token);
  return `berth.events.${token(namespace)}.${parts.join('.')}`;
}

/** The namespace and topic an event subject stands for. */
export function parseEventSubject(subject: string): { namespace: string; topic: string } {
  const parts = subject.split('.');
  if (parts.length < 4 || parts[0] !== 'berth' || parts[1] !== 'events') throw new Error(`not an event subject: ${subject}`);
  return { namespace: untoken(parts[2]!), topic: '/' + parts.slice(3).map(untoken).join('/') };
}

/**
 * `$SRV.HEAP.berth-<process>.<node>`: a process's heap after a full collection, answered only where
 * BERTH_DEBUG_HEAP=1 (packages/kit/src/heap.ts). In the micro service API's space of the process:
 * every process may subscribe there and only the gateway's NATS user may publish.
 */
export function heapSubject(node: string, name: string): string {
  return `$SRV.HEAP.berth-${name}.${token(node)}`;
}
