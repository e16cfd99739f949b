import { test } from 'node:test';
import assert from 'node:assert/strict';
import { codec, readyCodecsInBackground, root, warmCodecs, services, fromAny, method, specFromAny, specToAny, toAny, anyTypeName, fromTimestamp, toTimestamp } from './index.js';

test('every containerd 1.6 gRPC service is known', () => {
  const names = services.map((s) => s.fullName).sort();
  for (const s of ['containers.v1.Containers', 'content.v1.Content', 'diff.v1.Diff', 'events.v1.Events', 'images.v1.Images',
    'introspection.v1.Introspection', 'leases.v1.Leases', 'namespaces.v1.Namespaces', 'snapshots.v1.Snapshots', 'tasks.v1.Tasks', 'version.v1.Version']) {
    assert.ok(names.includes(`containerd.services.${s}`), s);
  }
});

test('streaming flags come from the protos', () => {
  const write = method('/containerd.services.content.v1.Content/Write');
  assert.equal(write.requestStream, true);
  assert.equal(write.responseStream, true);
  const read = method('/containerd.services.content.v1.Content/Read');
  assert.deepEqual([read.requestStream, read.responseStream], [false, true]);
  assert.equal(method('/containerd.task.v2.Task/Create').requestType, 'containerd.task.v2.CreateTaskRequest');
});

test('codec round trip keeps proto field names and numbers', () => {
  const c = codec('containerd.services.content.v1.Info');
  const bytes = c.encode({ digest: 'sha256:ab', size: 5_000_000_000, labels: { a: 'b' }, created_at: { seconds: 10, nanos: 5 } });
  const back = c.decode(bytes);
  assert.equal(back.digest, 'sha256:ab');
  assert.equal(back.size, 5_000_000_000);
  assert.deepEqual(back.labels, { a: 'b' });
  assert.deepEqual(back.created_at, { seconds: 10, nanos: 5 });
});

test('Any uses bare type names like containerd', () => {
  const any = toAny('containerd.events.NamespaceCreate', { name: 'x', labels: { k: 'v' } });
  assert.equal(any.type_url, 'containerd.events.NamespaceCreate');
  assert.deepEqual(fromAny(any), { name: 'x', labels: { k: 'v' } });
  assert.equal(anyTypeName({ type_url: 'type.googleapis.com/containerd.events.TaskExit' }), 'containerd.events.TaskExit');
  const spec = specToAny({ ociVersion: '1.0.2' });
  assert.equal(spec.type_url, 'types.containerd.io/opencontainers/runtime-spec/1/Spec');
  assert.deepEqual(specFromAny(spec), { ociVersion: '1.0.2' });
});

test('now has nanoseconds and follows the wall clock', async () => {
  const { nowTimestamp } = await import('./index.js');
  const a = nowTimestamp();
  assert.ok(Math.abs(a.seconds * 1000 + a.nanos / 1e6 - Date.now()) < 50);
  const seen = new Set(Array.from({ length: 5 }, () => nowTimestamp().nanos % 1_000_000));
  assert.ok([...seen].some((n) => n !== 0), 'sub-millisecond digits');
});

test('timestamps', () => {
  const ts = toTimestamp(1_700_000_000_123);
  assert.deepEqual(ts, { seconds: 1_700_000_000, nanos: 123_000_000 });
  assert.equal(fromTimestamp(ts)!.getTime(), 1_700_000_000_123);
});

test('warmCodecs readies a message and every message it holds, in the background', async () => {
  const name = 'containerd.services.tasks.v1.MetricsResponse';
  const top = root.lookupType(name);
  const nested = root.lookupType('containerd.types.Metric');
  const ready = (t: { encode: unknown }) => Object.prototype.hasOwnProperty.call(t, 'encode');
  assert.equal(ready(top), false, 'not yet used');
  assert.equal(ready(nested), false, 'not yet used');
  warmCodecs([name]);
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.equal(ready(top), false, 'not in a process that did not ask for it (the CLI)');
  readyCodecsInBackground();
  assert.equal(ready(top), false, 'not on the caller\'s turn');
  for (let i = 0; i < 20 && !ready(nested); i++) await new Promise((r) => setImmediate(r));
  assert.equal(ready(top), true);
  assert.equal(ready(nested), true, 'the Metric it holds is readied too');
  const c = codec(name);
  assert.equal(c.decode(c.encode({ metrics: [{ id: 'x' }] })).metrics[0].id, 'x');
});
