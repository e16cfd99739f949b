// Whether a namespace still holds anything. containerd answers this from one database; here
// each service that keeps namespaced data answers for itself on its own endpoint
// `berth.<node>.<service>.v1.NamespaceUsage`, and the namespaces service asks every such service
// the node runs before it deletes a namespace. One that does not answer makes the delete fail
// (Unavailable): a namespace is never removed while data in it may still exist.
import { BerthError, Code } from '@berth/errdefs';
import type { BusClient } from './client.js';
import type { BusServer } from './server.js';
import { rpcSubject } from './subjects.js';

export const usageMethod = 'NamespaceUsage';

/** The services that keep namespaced data, in containerd's order of kinds. */
export const namespacedServices = ['images', 'content', 'containers', 'snapshot'];

/** Answers usage questions: `kinds` returns what this service still holds in a namespace. */
export function serveNamespaceUsage(server: BusServer, kinds: (namespace: string) => Promise<string[]>): void {
  server.raw(usageMethod, async (_data, ctx) => Buffer.from(JSON.stringify({ kinds: await kinds(ctx.namespace ?? '') })));
}

/** Everything the given services still hold in `namespace`, as containerd names the kinds. */
export async function namespaceUsage(client: BusClient, node: string, services: string[], namespace: string): Promise<string[]> {
  const asked = namespacedServices.filter((s) => services.includes(s));
  const answers = await Promise.all(
    asked.map(async (s) => {
      try {
        const res = await client.unary(rpcSubject(node, s, usageMethod), new Uint8Array(), { namespace }, { timeout: 10_000 });
        return (JSON.parse(Buffer.from(res).toString('utf8')) as { kinds: string[] }).kinds;
      } catch (e) {
        if (e instanceof BerthError && e.code === Code.Unavailable) {
          throw new BerthError(Code.Unavailable, `namespace "${namespace}": cannot tell whether it is empty: ${s} service not running`);
        }
        throw e;
      }
    }),
  );
  return answers.flat();
}
