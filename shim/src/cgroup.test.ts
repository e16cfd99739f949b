// Metrics from cgroup files in containerd's types, v1 and v2, from fake trees (this machine runs
// v1 only; the real v1 tree is covered by host.test.ts), and the OOM counter both ways.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { codec, fromAny } from '@berth/api';
import { blkEntries, metrics, oomKills, statsV1, statsV2 } from './cgroup.js';

function tree(files: Record<string, string>): string {
  const dir = mkdtempSync('/tmp/berth-cg-');
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

test('v2: pids, cpu, memory, io, hugetlb, memory events as io.containerd.cgroups.v2.Metrics', () => {
  const dir = tree({
    'pids.current': '3\n',
    'pids.max': 'max\n',
    'cpu.stat': 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 20\n',
    'memory.stat': 'anon 4096\nfile 8192\npgfault 12\nworkingset_refault_anon 2\nworkingset_refault_file 3\n',
    'memory.current': '12288\n',
    'memory.max': '33554432\n',
    'memory.swap.current': '0\n',
    'memory.swap.max': 'max\n',
    'io.stat': '8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n',
    'hugetlb.2MB.current': '0\n',
    'hugetlb.2MB.max': 'max\n',
    'memory.events': 'low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n',
  });
  try {
    const any = metrics({ v2: dir });
    assert.equal(any.type_url, 'io.containerd.cgroups.v2.Metrics');
    const m = fromAny(any);
    assert.deepEqual(m.pids, { current: 3, limit: 0 });
    assert.equal(m.cpu.usage_usec, 1500);
    assert.equal(m.cpu.throttled_usec, 20);
    assert.equal(m.memory.anon, 4096);
    assert.equal(m.memory.usage, 12288);
    assert.equal(m.memory.usage_limit, 33554432);
    assert.equal(m.memory.workingset_refault, 5);
    assert.deepEqual(m.io.usage, [{ major: 8, minor: 0, rbytes: 100, wbytes: 200, rios: 1, wios: 2 }]);
    assert.deepEqual(m.hugetlb, [{ pagesize: '2MB', current: 0, max: 0 }]);
    assert.equal(m.memory_events.oom_kill, 1);
    assert.equal(oomKills({ v2: dir }), 1);
    // every field name is one the type has: encoding keeps it
    assert.deepEqual(codec('io.containerd.cgroups.v2.Metrics').decode(codec('io.containerd.cgroups.v2.Metrics').encode(statsV2(dir))).memory.file, 8192);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('v1: per-controller folders as io.containerd.cgroups.v1.Metrics; the OOM counter from memory.oom_control', () => {
  const dir = tree({
    'pids/pids.current': '2\n',
    'pids/pids.max': '42\n',
    'cpuacct/cpuacct.usage': '5000000\n',
    'cpuacct/cpuacct.usage_percpu': '3000000 2000000 \n',
    'cpuacct/cpuacct.stat': 'user 3\nsystem 1\n',
    'cpu/cpu.stat': 'nr_periods 0\nnr_throttled 0\nthrottled_time 0\n',
    'memory/memory.stat': 'cache 100\nrss 200\ntotal_rss 300\npgpgin 7\nhierarchical_memory_limit 1000\n',
    'memory/memory.usage_in_bytes': '4096\n',
    'memory/memory.max_usage_in_bytes': '8192\n',
    'memory/memory.limit_in_bytes': '33554432\n',
    'memory/memory.failcnt': '9\n',
    'memory/memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 2\n',
    'blkio/blkio.io_service_bytes_recursive': '8:0 Read 4096\n8:0 Write 0\nTotal 4096\n',
  });
  try {
    const paths = { v1: { pids: join(dir, 'pids'), cpuacct: join(dir, 'cpuacct'), cpu: join(dir, 'cpu'), memory: join(dir, 'memory'), blkio: join(dir, 'blkio') } };
    const any = metrics(paths);
    assert.equal(any.type_url, 'io.containerd.cgroups.v1.Metrics');
    const m = fromAny(any);
    assert.deepEqual(m.pids, { current: 2, limit: 42 });
    assert.equal(m.cpu.usage.total, 5000000);
    assert.deepEqual(m.cpu.usage.per_cpu, [3000000, 2000000]);
    assert.equal(m.cpu.usage.user, 30_000_000);
    assert.equal(m.memory.rss, 200);
    assert.equal(m.memory.total_rss, 300);
    assert.equal(m.memory.pg_pg_in, 7);
    assert.deepEqual(m.memory.usage, { usage: 4096, max: 8192, failcnt: 9, limit: 33554432 });
    assert.equal(m.memory_oom_control.oom_kill, 2);
    assert.equal(m.blkio.io_service_bytes_recursive.length, 2);
    assert.equal(m.blkio.io_service_bytes_recursive[0].op, 'Read');
    assert.equal(m.blkio.io_service_bytes_recursive[0].value, 4096);
    assert.equal(oomKills(paths), 2);
    assert.ok(Object.keys(statsV1({})).length === 0, 'no controllers, no sections');
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('blkio lines: the Total line is not an entry', () => {
  assert.deepEqual(blkEntries('Total 5\n').length, 0);
  assert.equal(blkEntries('253:1 Sync 10\n')[0]!.minor, 1);
});
