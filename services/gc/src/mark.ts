// The mark, as containerd's metadata/gc.go defines it: records in, what is reachable and what is
// not out. Pure: no NATS, no store, the time given.
//
// Roots: every image (its target and its label references), every container (its snapshot and
// label references), every lease that has not expired (what it holds; a `containerd.io/gc.flat`
// lease holds only the resources themselves, not what they reference), every ingest with an
// expiry still ahead, and any content or snapshot labelled `containerd.io/gc.root`.
// Edges: `containerd.io/gc.ref.content[.|/<name>]` and `containerd.io/gc.ref.snapshot.<snapshotter>[/<name>]`
// labels on content and snapshots, a snapshot's parent, an ingest's expected digest.
// Everything is per namespace.
import type { GcLabels, GcRecords, GcSweep } from '@berth/bus';

const labelRoot = 'containerd.io/gc.root';
const labelContentRef = 'containerd.io/gc.ref.content';
const labelSnapshotRef = 'containerd.io/gc.ref.snapshot.';
const labelExpire = 'containerd.io/gc.expire';
const labelFlat = 'containerd.io/gc.flat';

type Kind = 'content' | 'snapshot' | 'ingest' | 'lease';

/** A node's identity: kind, namespace, key (a snapshot's key is `<snapshotter>/<name>`). */
export const nodeId = (kind: Kind, ns: string, k: string) => `${kind}\u0000${ns}\u0000${k}`;

// containerd parses gc.expire with Go's time.RFC3339
const rfc3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i;

/** A lease's expiry in ms, or undefined when it has none (or one containerd would ignore as invalid). */
export function leaseExpiry(labels: GcLabels): number | undefined {
  const v = labels[labelExpire];
  if (v === undefined || !rfc3339.test(v)) return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : t;
}

/** The references a record's labels make (containerd's sendLabelRefs). */
export function labelRefs(ns: string, labels: GcLabels): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (k.startsWith(labelContentRef)) {
      const sep = k[labelContentRef.length];
      if (sep === undefined || sep === '.' || sep === '/') out.push(nodeId('content', ns, v));
    } else if (k.startsWith(labelSnapshotRef)) {
      const rest = k.slice(labelSnapshotRef.length);
      const snapshotter = rest.includes('/') ? rest.slice(0, rest.indexOf('/')) : rest;
      out.push(nodeId('snapshot', ns, `${snapshotter}/${v}`));
    }
  }
  return out;
}

export interface MarkResult {
  /** every reachable node (nodeId) */
  marked: Set<string>;
  /** what no root reaches, by the service that removes it */
  sweep: GcSweep;
  /** the earliest expiry still ahead (a lease's, an ingest's): the next collection worth running, ms */
  nextExpiry?: number;
}

export function mark(r: GcRecords, now: number): MarkResult {
  const content = new Map((r.content ?? []).map((c) => [nodeId('content', c.ns, c.digest), c]));
  const snapshots = new Map((r.snapshots ?? []).map((s) => [nodeId('snapshot', s.ns, `${s.snapshotter}/${s.name}`), s]));
  const ingests = new Map((r.ingests ?? []).map((i) => [nodeId('ingest', i.ns, i.ref), i]));
  let nextExpiry: number | undefined;
  const ahead = (t: number) => (nextExpiry = nextExpiry === undefined ? t : Math.min(nextExpiry, t));

  // gray nodes: [id, flat]; a node reached flat and not flat is followed both ways, as in containerd
  const gray: [string, boolean][] = [];
  const seen = new Set<string>();
  const marked = new Set<string>();
  const root = (id: string, flat = false) => gray.push([id, flat]);

  for (const l of r.leases ?? []) {
    const exp = leaseExpiry(l.labels);
    if (exp !== undefined && exp < now) continue;
    if (exp !== undefined) ahead(exp);
    root(nodeId('lease', l.ns, l.id));
    const flat = l.labels[labelFlat] !== undefined;
    for (const res of l.resources) {
      if (res.type === 'content') root(nodeId('content', l.ns, res.id), flat);
      else if (res.type === 'ingests') root(nodeId('ingest', l.ns, res.id));
      else if (res.type.startsWith('snapshots/')) root(nodeId('snapshot', l.ns, `${res.type.slice('snapshots/'.length)}/${res.id}`), flat);
    }
  }
  for (const img of r.images ?? []) {
    if (img.target) root(nodeId('content', img.ns, img.target));
    for (const id of labelRefs(img.ns, img.labels)) root(id);
  }
  for (const c of r.containers ?? []) {
    if (c.snapshotter) root(nodeId('snapshot', c.ns, `${c.snapshotter}/${c.snapshot_key}`));
    for (const id of labelRefs(c.ns, c.labels)) root(id);
  }
  for (const i of r.ingests ?? []) {
    if (i.expires === undefined || i.expires < now) continue;
    ahead(i.expires);
    root(nodeId('ingest', i.ns, i.ref));
  }
  for (const [id, c] of content) if (c.labels[labelRoot] !== undefined) root(id);
  for (const [id, s] of snapshots) if (s.labels[labelRoot] !== undefined) root(id);

  while (gray.length) {
    const [id, flat] = gray.pop()!;
    const seenId = flat ? `${id}\u0000flat` : id;
    if (seen.has(seenId)) continue;
    seen.add(seenId);
    marked.add(id);
    const next = (to: string, f = false) => {
      if (!seen.has(f ? `${to}\u0000flat` : to)) gray.push([to, f]);
    };
    const c = content.get(id);
    if (c && !flat) for (const to of labelRefs(c.ns, c.labels)) next(to);
    const s = snapshots.get(id);
    if (s) {
      if (s.parent) next(nodeId('snapshot', s.ns, `${s.snapshotter}/${s.parent}`), flat);
      if (!flat) for (const to of labelRefs(s.ns, s.labels)) next(to);
    }
    const i = ingests.get(id);
    if (i?.expected) next(nodeId('content', i.ns, i.expected));
  }

  const sweep: GcSweep = {
    content: [...content].filter(([id]) => !marked.has(id)).map(([, c]) => ({ ns: c.ns, digest: c.digest })),
    ingests: [...ingests].filter(([id]) => !marked.has(id)).map(([, i]) => ({ ns: i.ns, ref: i.ref })),
    snapshots: [...snapshots].filter(([id]) => !marked.has(id)).map(([, s]) => ({ ns: s.ns, snapshotter: s.snapshotter, name: s.name })),
    leases: (r.leases ?? []).filter((l) => !marked.has(nodeId('lease', l.ns, l.id))).map((l) => ({ ns: l.ns, id: l.id })),
  };
  return { marked, sweep, ...(nextExpiry !== undefined ? { nextExpiry } : {}) };
}
