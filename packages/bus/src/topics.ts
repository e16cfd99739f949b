// containerd's event topics and the message each one carries. Services publish through
// their outbox (outbox.ts), so a topic can only go out with the payload type containerd gives it.

export const eventTypes = {
  '/containers/create': 'containerd.events.ContainerCreate',
  '/containers/update': 'containerd.events.ContainerUpdate',
  '/containers/delete': 'containerd.events.ContainerDelete',
  '/content/delete': 'containerd.events.ContentDelete',
  // (image events live in the images service's package, as in containerd's protos)
  '/images/create': 'containerd.services.images.v1.ImageCreate',
  '/images/update': 'containerd.services.images.v1.ImageUpdate',
  '/images/delete': 'containerd.services.images.v1.ImageDelete',
  '/namespaces/create': 'containerd.events.NamespaceCreate',
  '/namespaces/update': 'containerd.events.NamespaceUpdate',
  '/namespaces/delete': 'containerd.events.NamespaceDelete',
  '/snapshot/prepare': 'containerd.events.SnapshotPrepare',
  '/snapshot/commit': 'containerd.events.SnapshotCommit',
  '/snapshot/remove': 'containerd.events.SnapshotRemove',
  '/tasks/create': 'containerd.events.TaskCreate',
  '/tasks/start': 'containerd.events.TaskStart',
  '/tasks/oom': 'containerd.events.TaskOOM',
  '/tasks/exit': 'containerd.events.TaskExit',
  '/tasks/delete': 'containerd.events.TaskDelete',
  '/tasks/exec-added': 'containerd.events.TaskExecAdded',
  '/tasks/exec-started': 'containerd.events.TaskExecStarted',
  '/tasks/paused': 'containerd.events.TaskPaused',
  '/tasks/resumed': 'containerd.events.TaskResumed',
  '/tasks/checkpointed': 'containerd.events.TaskCheckpointed',
} as const;

export type Topic = keyof typeof eventTypes;
