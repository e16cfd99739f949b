import { test } from 'node:test';
import assert from 'node:assert/strict';
import { credentials } from './flags.js';

test('--user USER[:PASSWORD]: split at the first colon; no colon is a user without a password', () => {
  assert.deepEqual(credentials('alice:s3:cret'), { username: 'alice', password: 's3:cret' });
  assert.deepEqual(credentials('alice'), { username: 'alice', password: '' });
  assert.deepEqual(credentials(':pw'), { username: '', password: 'pw' });
  assert.deepEqual(credentials(undefined), { username: '', password: '' });
});
