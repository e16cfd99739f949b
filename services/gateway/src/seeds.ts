// Writes whose answer is also a read's: the gateway keeps it as that read's answer, so the read a
// client makes right after its write (ctr run: Containers.Get after Create, Snapshots.Mounts after
// Prepare) costs no bus round trip. The owning service marks such a reply only when its own write
// was the only one while it ran (BusServer's `seeds`, @berth/bus changes.ts); a pair here must be
// named there too, or its replies never say they may be kept.
import { codec, type Codec } from '@berth/api';
import { taskNotFound, type BerthError } from '@berth/errdefs';

export interface Seed {
  /** the read whose answer the write's answer is */
  read: string;
  /** that read's request bytes, made from the write's (undefined: none to keep) */
  request: (write: Buffer) => Uint8Array | undefined;
  /** the read's answer is this error, not the write's answer (made from the read's request) */
  refusal?: (read: Uint8Array) => BerthError;
}

const containers = 'containerd.services.containers.v1';
const snapshots = 'containerd.services.snapshots.v1';
const tasks = 'containerd.services.tasks.v1';

/** The seeds by the write's path. */
export function seedsByPath(): Map<string, Seed> {
  const create = codec(`${containers}.CreateContainerRequest`);
  const get = codec(`${containers}.GetContainerRequest`);
  const mounts = codec(`${snapshots}.MountsRequest`);
  const taskGet = codec(`${tasks}.GetRequest`);
  const taskDelete = codec(`${tasks}.DeleteTaskRequest`);
  // the snapshot is named by the same fields in Prepare, View and Mounts: snapshotter and key
  const mountsOf = (write: Codec) => (body: Buffer) => {
    const r = write.decode(body) as { snapshotter?: string; key?: string };
    return r.key ? mounts.encode({ snapshotter: r.snapshotter ?? '', key: r.key }) : undefined;
  };
  return new Map<string, Seed>([
    [
      `/${containers}.Containers/Create`,
      {
        read: `/${containers}.Containers/Get`,
        request: (body) => {
          const id = (create.decode(body) as { container?: { id?: string } }).container?.id;
          return id ? get.encode({ id }) : undefined;
        },
      },
    ],
    [`/${snapshots}.Snapshots/Prepare`, { read: `/${snapshots}.Snapshots/Mounts`, request: mountsOf(codec(`${snapshots}.PrepareSnapshotRequest`)) }],
    [`/${snapshots}.Snapshots/View`, { read: `/${snapshots}.Snapshots/Mounts`, request: mountsOf(codec(`${snapshots}.ViewSnapshotRequest`)) }],
    // a deleted task: its container's Get is NotFound until the tasks change (ctr asks twice
    // after its delete, dockerd once), in the tasks service's words
    [
      `/${tasks}.Tasks/Delete`,
      {
        read: `/${tasks}.Tasks/Get`,
        request: (body) => {
          const id = (taskDelete.decode(body) as { container_id?: string }).container_id;
          return id ? taskGet.encode({ container_id: id }) : undefined;
        },
        refusal: (read) => taskNotFound((taskGet.decode(read) as { container_id: string }).container_id),
      },
    ],
  ]);
}
