// Leases own their resources: the leases service keeps every lease → resource record, whatever
// kind of resource and whichever service made it. A service that writes under a lease (content
// now, snapshots later) records the resource through the leases service's own AddResource
// before it creates the resource (a reference first, so nothing is ever unreferenced in
// between), and drops it with DeleteResource. ListResources, DeleteResource and Delete then have
// one place to be right in, and a lease deleted and created again starts empty.
import { codec } from '@berth/api';
import { BerthError, Code, notFound } from '@berth/errdefs';
import type { BusClient } from './client.js';
import { rpcSubject } from './subjects.js';

export interface LeaseResource {
  id: string;
  /** `content`, `ingests`, `snapshots/<snapshotter>` */
  type: string;
}

export interface LeaseRefs {
  add(namespace: string, lease: string, r: LeaseResource): Promise<void>;
  remove(namespace: string, lease: string, r: LeaseResource): Promise<void>;
}

const addReq = codec('containerd.services.leases.v1.AddResourceRequest');
const delReq = codec('containerd.services.leases.v1.DeleteResourceRequest');

/** Lease references through this node's leases service. */
export function leaseRefs(client: BusClient, node: string): LeaseRefs {
  return {
    async add(namespace, lease, resource) {
      try {
        await client.unary(rpcSubject(node, 'leases', 'AddResource'), addReq.encode({ id: lease, resource }), { namespace }, { timeout: 10_000 });
      } catch (e) {
        // containerd's words when a write names a lease that is not there
        if (e instanceof BerthError && e.code === Code.NotFound) throw notFound('lease does not exist');
        if (e instanceof BerthError && e.code === Code.Unavailable) throw new BerthError(Code.Unavailable, `lease "${lease}": leases service not running`);
        throw e;
      }
    },
    async remove(namespace, lease, resource) {
      try {
        await client.unary(rpcSubject(node, 'leases', 'DeleteResource'), delReq.encode({ id: lease, resource }), { namespace }, { timeout: 10_000 });
      } catch (e) {
        // the lease went away meanwhile: nothing left to drop
        if (!(e instanceof BerthError && e.code === Code.NotFound)) throw e;
      }
    },
  };
}
