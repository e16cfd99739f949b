import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { configToml, defaultConfig, loadConfig } from './config.js';

test('the default config prints as TOML that loads back the same', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-cfg-'));
  const f = join(dir, 'config.toml');
  writeFileSync(f, configToml());
  assert.deepEqual(loadConfig(f), defaultConfig());
  assert.equal((parse(configToml()) as { grpc: { address: string } }).grpc.address, '/run/berth/berth.sock');
});

test('file then overrides; unknown keys and wrong types are errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-cfg-'));
  const f = join(dir, 'config.toml');
  writeFileSync(f, 'root = "/tmp/r"\n[nats]\nport = 5222\n');
  const c = loadConfig(f, { node: 'n1', state: '/tmp/s' });
  assert.equal(c.root, '/tmp/r');
  assert.equal(c.nats.port, 5222);
  assert.equal(c.node, 'n1');
  assert.equal(c.grpc.address, '/tmp/s/berth.sock');
  writeFileSync(f, 'bogus = 1\n');
  assert.throws(() => loadConfig(f), /unknown setting bogus/);
  writeFileSync(f, '[nats]\nport = "x"\n');
  assert.throws(() => loadConfig(f), /nats.port must be a number/);
});
