// The mark without NATS: records in, reachable set and sweep out, against containerd's rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { GcRecords } from '@berth/bus';
import { labelRefs, leaseExpiry, mark, nodeId } from './mark.js';

const now = Date.parse('2026-11-25T12:00:00Z');
const d = (n: number) => `sha256:${String(n).padStart(64, '0')}`;
const content = (ns: string, n: number, labels: Record<string, string> = {}) => ({ ns, digest: d(n), size: n, labels });
const snap = (ns: string, name: string, parent = '', labels: Record<string, string> = {}, snapshotter = 'overlayfs') => ({ ns, snapshotter, name, parent, labels });
const swept = (r: GcRecords) => {
  const s = mark(r, now).sweep;
  return {
    content: (s.content ?? []).map((c) => `${c.ns}/${c.digest.slice(-2)}`).sort(),
    snapshots: (s.snapshots ?? []).map((x) => `${x.ns}/${x.snapshotter}/${x.name}`).sort(),
    ingests: (s.ingests ?? []).map((i) => `${i.ns}/${i.ref}`).sort(),
    leases: (s.leases ?? []).map((l) => `${l.ns}/${l.id}`).sort(),
  };
};

test('an image holds its target and what the target labels reference, transitively; the rest is swept', () => {
  const r: GcRecords = {
    images: [{ ns: 'default', name: 'busybox', target: d(1), labels: {} }],
    content: [
      content('default', 1, { 'containerd.io/gc.ref.content.m.0': d(2) }),
      content('default', 2, { 'containerd.io/gc.ref.content.l.0': d(3), 'containerd.io/gc.ref.snapshot.overlayfs': 'sha256:chain' }),
      content('default', 3),
      content('default', 4),
      // the same digest in another namespace is another node
      content('other', 1),
    ],
    snapshots: [snap('default', 'sha256:chain', 'sha256:base'), snap('default', 'sha256:base'), snap('default', 'stray')],
  };
  assert.deepEqual(swept(r), { content: ['default/04', 'other/01'], snapshots: ['default/overlayfs/stray'], ingests: [], leases: [] });
});

test('content label references: the bare key and names after "." or "/"; not other suffixes', () => {
  const refs = labelRefs('ns', {
    'containerd.io/gc.ref.content': d(1),
    'containerd.io/gc.ref.content.config': d(2),
    'containerd.io/gc.ref.content/layer': d(3),
    'containerd.io/gc.ref.contentx': d(4),
    'containerd.io/gc.ref.snapshot.native/extra': 'n1',
    'containerd.io/gc.ref.snapshot.overlayfs': 'o1',
    'other': d(5),
  });
  assert.deepEqual(refs.sort(), [nodeId('content', 'ns', d(1)), nodeId('content', 'ns', d(2)), nodeId('content', 'ns', d(3)), nodeId('snapshot', 'ns', 'native/n1'), nodeId('snapshot', 'ns', 'overlayfs/o1')].sort());
});

test('a container holds its snapshot and the snapshot its parents; label references on containers count', () => {
  const r: GcRecords = {
    containers: [{ ns: 'n', id: 'c1', snapshotter: 'native', snapshot_key: 'rw', labels: { 'containerd.io/gc.ref.content.spec': d(9) } }],
    snapshots: [snap('n', 'rw', 'base', {}, 'native'), snap('n', 'base', '', {}, 'native'), snap('n', 'rw', '', {}, 'overlayfs')],
    content: [content('n', 9), content('n', 8)],
  };
  assert.deepEqual(swept(r), { content: ['n/08'], snapshots: ['n/overlayfs/rw'], ingests: [], leases: [] });
});

test('leases: resources are held until the lease expires; an expired lease itself is swept; an invalid expiry is ignored', () => {
  const lease = (id: string, labels: Record<string, string>, resources: { type: string; id: string }[]) => ({ ns: 'n', id, labels, resources });
  const r: GcRecords = {
    leases: [
      lease('live', { 'containerd.io/gc.expire': '2026-11-25T13:00:00Z' }, [{ type: 'content', id: d(1) }, { type: 'ingests', id: 'ref-live' }]),
      lease('expired', { 'containerd.io/gc.expire': '2026-11-25T11:59:59Z' }, [{ type: 'content', id: d(2) }, { type: 'snapshots/overlayfs', id: 's2' }]),
      lease('bad-expiry', { 'containerd.io/gc.expire': 'tomorrow' }, [{ type: 'snapshots/overlayfs', id: 's3' }]),
      lease('plain', {}, []),
    ],
    content: [content('n', 1), content('n', 2)],
    snapshots: [snap('n', 's2'), snap('n', 's3')],
    ingests: [{ ns: 'n', ref: 'ref-live' }, { ns: 'n', ref: 'ref-none' }],
  };
  assert.deepEqual(swept(r), { content: ['n/02'], snapshots: ['n/overlayfs/s2'], ingests: ['n/ref-none'], leases: ['n/expired'] });
  assert.equal(mark(r, now).nextExpiry, Date.parse('2026-11-25T13:00:00Z'));
  assert.equal(leaseExpiry({ 'containerd.io/gc.expire': 'tomorrow' }), undefined);
});

test('a gc.flat lease holds its resources but not what they reference; a parent stays (flat)', () => {
  const r: GcRecords = {
    leases: [{ ns: 'n', id: 'flat', labels: { 'containerd.io/gc.flat': '' }, resources: [{ type: 'content', id: d(1) }, { type: 'snapshots/overlayfs', id: 'top' }] }],
    content: [content('n', 1, { 'containerd.io/gc.ref.content.x': d(2) }), content('n', 2)],
    snapshots: [snap('n', 'top', 'mid', { 'containerd.io/gc.ref.content.y': d(3) }), snap('n', 'mid'), ],
  };
  assert.deepEqual(swept({ ...r, content: [...r.content!, content('n', 3)] }), { content: ['n/02', 'n/03'], snapshots: [], ingests: [], leases: [] });
  // reached flat and not flat: followed fully
  const both: GcRecords = { ...r, images: [{ ns: 'n', name: 'i', target: d(1), labels: {} }] };
  assert.deepEqual(swept(both).content, []);
});

test('gc.root keeps content and snapshots (and what they reference); ingests with an expiry ahead are roots, expired ones are not', () => {
  const r: GcRecords = {
    content: [content('n', 1, { 'containerd.io/gc.root': 'x', 'containerd.io/gc.ref.content': d(2) }), content('n', 2), content('n', 3)],
    snapshots: [snap('n', 'kept', 'p', { 'containerd.io/gc.root': '' }), snap('n', 'p'), snap('n', 'gone')],
    ingests: [
      { ns: 'n', ref: 'fresh', expires: now + 1000, expected: d(3) },
      { ns: 'n', ref: 'stale', expires: now - 1 },
    ],
  };
  assert.deepEqual(swept(r), { content: [], snapshots: ['n/overlayfs/gone'], ingests: ['n/stale'], leases: [] });
  assert.equal(mark(r, now).nextExpiry, now + 1000);
});

test('nothing at all: nothing to sweep', () => {
  assert.deepEqual(swept({}), { content: [], snapshots: [], ingests: [], leases: [] });
});
