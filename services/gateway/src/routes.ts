// Which bus service owns each containerd gRPC service. Every route is node-local
// (`berth.<node>.<service>.v1.<Method>`): image and container records point at blobs and
// snapshots on this node's disk, so they belong to the node as much as the blobs do.
export const owners: Record<string, string> = {
  'containerd.services.containers.v1.Containers': 'containers',
  'containerd.services.content.v1.Content': 'content',
  'containerd.services.diff.v1.Diff': 'diff',
  'containerd.services.events.v1.Events': 'events',
  'containerd.services.images.v1.Images': 'images',
  'containerd.services.leases.v1.Leases': 'leases',
  'containerd.services.namespaces.v1.Namespaces': 'namespaces',
  'containerd.services.snapshots.v1.Snapshots': 'snapshot',
  'containerd.services.tasks.v1.Tasks': 'tasks',
  // Berth's own API beside containerd's
  'berth.events.v1.Replay': 'events',
  'berth.images.v1.Transfer': 'images',
  'berth.gc.v1.GC': 'gc',
};

/** Served by the gateway itself. */
export const local = new Set(['containerd.services.version.v1.Version', 'containerd.services.introspection.v1.Introspection']);
