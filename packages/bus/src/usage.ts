// Whether a namespace still holds anything. containerd answers this from one database; here
// each service that keeps namespaced data (content, snapshots, images, containers, leases)
// answers for itself on `berth.<node>.namespace-usage`, and the namespaces service asks them all
// before it deletes a namespace.
import type { NatsConnection } from '@nats-io/nats-core';
import { H, headers } from './headers.js';
import { token } from './subjects.js';

export function usageSubject(node: string): string {
  return `berth.${token(node)}.namespace-usage`;
}

/** Answers usage questions: `kinds` returns what this service still holds in a namespace. */
export function serveNamespaceUsage(nc: NatsConnection, node: string, kinds: (namespace: string) => Promise<string[]>) {
  return nc.subscribe(usageSubject(node), {
    callback: (err, msg) => {
      if (err) return;
      const ns = msg.headers?.get(H.namespace) ?? '';
      kinds(ns).then(
        (k) => msg.respond(JSON.stringify({ kinds: k })),
        (e) => msg.respond(JSON.stringify({ error: String(e) })),
      );
    },
  });
}

/** Everything any service still holds in `namespace`, as containerd names the kinds. */
export async function namespaceUsage(nc: NatsConnection, node: string, namespace: string): Promise<string[]> {
  const h = headers();
  h.set(H.namespace, namespace);
  const out: string[] = [];
  try {
    const replies = await nc.requestMany(usageSubject(node), '', { headers: h, strategy: 'stall', stall: 150, maxWait: 2000 });
    for await (const m of replies) {
      if (m.headers?.hasError) break; // no responders: nothing holds data
      const r = m.json<{ kinds?: string[]; error?: string }>();
      if (r.error) throw new Error(r.error);
      out.push(...(r.kinds ?? []));
    }
  } catch (err) {
    if ((err as { name?: string })?.name === 'NoRespondersError' || /no responders/i.test(String(err))) return out;
    throw err;
  }
  return out;
}
