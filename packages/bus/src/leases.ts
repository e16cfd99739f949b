// Whether a lease exists: the leases service answers, services that record resources under a
// lease (content now; snapshots later) ask before they do, as containerd checks in its
// metadata store ("lease does not exist").
import type { BusClient } from './client.js';
import type { BusServer } from './server.js';
import { rpcSubject } from './subjects.js';

export const leaseExistsMethod = 'LeaseExists';

export function serveLeaseExists(server: BusServer, exists: (namespace: string, lease: string) => Promise<boolean>): void {
  server.raw(leaseExistsMethod, async (data, ctx) => {
    const { lease } = JSON.parse(Buffer.from(data).toString('utf8') || '{}') as { lease?: string };
    return Buffer.from(JSON.stringify({ exists: await exists(ctx.namespace ?? '', lease ?? '') }));
  });
}

/** Asks this node's leases service; Unavailable when it does not run. */
export async function leaseExists(client: BusClient, node: string, namespace: string, lease: string): Promise<boolean> {
  const res = await client.unary(rpcSubject(node, 'leases', leaseExistsMethod), Buffer.from(JSON.stringify({ lease })), { namespace }, { timeout: 10_000 });
  return (JSON.parse(Buffer.from(res).toString('utf8')) as { exists: boolean }).exists;
}
