// The spec `berth run` builds: docker's reading of CMD and --entrypoint, containerd's env merge
// and user lookup, ctr's defaults; and docker's command lines split at the image.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { parseLeading } from './args.js';
import { chainId } from './image.js';
import { buildSpec, mergeEnv, resolveUser } from './spec.js';

const base = { id: 'c1', namespace: 'default', env: [], tty: false, files: {} };

test('CMD replaces the image Cmd and keeps its Entrypoint; --entrypoint drops both', () => {
  const image = { Entrypoint: ['/ep'], Cmd: ['a'], Env: ['PATH=/x', 'A=1'], WorkingDir: '/w' };
  assert.deepEqual(buildSpec({ ...base, image, args: [] }).process.args, ['/ep', 'a']);
  assert.deepEqual(buildSpec({ ...base, image, args: ['b', 'c'] }).process.args, ['/ep', 'b', 'c']);
  assert.deepEqual(buildSpec({ ...base, image, args: [], entrypoint: 'echo' }).process.args, ['echo']);
  assert.deepEqual(buildSpec({ ...base, image, args: ['x'], entrypoint: 'echo' }).process.args, ['echo', 'x']);
  assert.throws(() => buildSpec({ ...base, image: {}, args: [] }), /no command specified/);
  const s = buildSpec({ ...base, image, args: [], env: ['A=2', 'B=3'], cwd: '/tmp', tty: true });
  assert.deepEqual(s.process.env, ['PATH=/x', 'A=2', 'B=3', 'TERM=xterm']);
  assert.equal(s.process.cwd, '/tmp');
  assert.equal(buildSpec({ ...base, image, args: [] }).process.cwd, '/w');
  assert.equal(s.process.terminal, true);
  assert.equal(s.linux.cgroupsPath, '/default/c1');
  assert.deepEqual(buildSpec({ ...base, image: { Cmd: ['sh'] }, args: [] }).process.env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']);
});

test('env merge: replace, append, a bare name removes', () => {
  assert.deepEqual(mergeEnv(['A=1', 'B=2'], ['B=3', 'C=4', 'A']), ['B=3', 'C=4']);
});

test('users: names and ids through the container files, supplementary groups, the primary first', () => {
  const files = { passwd: 'root:x:0:0:root:/root:/bin/sh\nsvc:x:100:101::/:/bin/false\n', group: 'root:x:0:\nsvc:x:101:\nwheel:x:10:root,svc\n' };
  assert.deepEqual(resolveUser('', files), { uid: 0, gid: 0, additionalGids: [0, 10] });
  assert.deepEqual(resolveUser('svc', files), { uid: 100, gid: 101, additionalGids: [101, 10] });
  assert.deepEqual(resolveUser('100:0', files), { uid: 100, gid: 0, additionalGids: [0, 10] });
  assert.deepEqual(resolveUser('svc:wheel', files), { uid: 100, gid: 10, additionalGids: [10] });
  assert.deepEqual(resolveUser('4242', {}), { uid: 4242, gid: 0, additionalGids: [0] });
  assert.throws(() => resolveUser('nobody', files), /unable to find user nobody/);
});

test('chain id: the first diff id, then sha256 of "<chain> <diff>"', () => {
  const a = `sha256:${'a'.repeat(64)}`;
  assert.equal(chainId([a]), a);
  assert.equal(chainId([a, `sha256:${'b'.repeat(64)}`]), `sha256:${createHash('sha256').update(`${a} sha256:${'b'.repeat(64)}`).digest('hex')}`);
});


test('docker command lines: flags before the image, the command keeps its own', () => {
  const options = { detach: { type: 'boolean', short: 'd' }, env: { type: 'string', short: 'e', multiple: true }, name: { type: 'string' } } as const;
  const r = parseLeading(['-de', 'A=1', '--name', 'x', '-eB=2', 'img', 'sh', '-c', 'echo -e'], options, 'usage');
  assert.deepEqual(r.rest, ['img', 'sh', '-c', 'echo -e']);
  assert.equal(r.values.detach, true);
  assert.deepEqual(r.values.env, ['A=1', 'B=2']);
  assert.equal(r.values.name, 'x');
  assert.deepEqual(parseLeading(['--', '-img'], options, 'usage').rest, ['-img']);
  assert.throws(() => parseLeading(['--bogus', 'img'], options, 'usage'), (e: any) => e.status === 125);
});
