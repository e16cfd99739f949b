// Forwarded calls that take along an answer the read cache holds, so the service they go to need
// not ask for it over the bus. Tasks.Create reads its container's record first; ctr and dockerd
// create that container a moment before (its Create's answer is kept as Containers.Get's,
// seeds.ts), so the record rides with the call instead of costing the tasks service a round trip
// to the containers service on the path of every run. Without a held copy the call goes as it is.
import { codec } from '@berth/api';
import type { CallContext } from '@berth/bus';
import type { Route } from './lean.js';
import type { ReadCache } from './readcache.js';

const containerGet = '/containerd.services.containers.v1.Containers/Get';

/** Route wrappers by the forwarded method's path. */
export function carriersByPath(cache: ReadCache): Map<string, (route: Route) => Route> {
  const create = codec('containerd.services.tasks.v1.CreateTaskRequest');
  const get = codec('containerd.services.containers.v1.GetContainerRequest');
  const withContainer =
    (route: Route): Route =>
    (body, ctx, onCancel) => {
      let id: string | undefined;
      try {
        id = (create.decode(body) as { container_id?: string }).container_id;
      } catch {
        // undecodable: the tasks service gives the error
      }
      const held = id && ctx.namespace ? cache.peek('containers', containerGet, ctx, get.encode({ id })) : undefined;
      const carried: CallContext = held ? { ...ctx, container: Buffer.from(held.buffer, held.byteOffset, held.byteLength).toString('base64') } : ctx;
      return route(body, carried, onCancel);
    };
  return new Map([['/containerd.services.tasks.v1.Tasks/Create', withContainer]]);
}
