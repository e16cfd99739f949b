import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Code, type BerthError } from '@berth/errdefs';
import { validateIdentifier, validateLabel } from './index.js';

test('identifiers: alphanumerics joined by single . _ -', () => {
  for (const ok of ['a', 'k8s.io', 'a-b_c.d', 'A1', 'x'.repeat(76)]) validateIdentifier(ok);
  for (const bad of ['-a', 'a-', 'a..b', 'a b', 'Bad_Name!', '.']) {
    assert.throws(() => validateIdentifier(bad), (e: BerthError) => e.code === Code.InvalidArgument && e.message.includes(`identifier "${bad}" must match`));
  }
  assert.throws(() => validateIdentifier(''), /identifier must not be empty: invalid argument/);
  assert.throws(() => validateIdentifier('x'.repeat(77)), /greater than maximum length \(76 characters\)/);
});

test('labels: key and value together at most 4096 bytes', () => {
  validateLabel('k', 'v'.repeat(4095));
  assert.throws(() => validateLabel('k', 'v'.repeat(4096)), /label key and value greater than maximum size \(4096 bytes\), key: k: invalid argument/);
  assert.throws(() => validateLabel('a-very-long-key', 'v'.repeat(4096)), /key: a-very-lon: invalid argument/);
});

test('digests: go-digest rules and words', async () => {
  const { digestProblem } = await import('./index.js');
  assert.equal(digestProblem('sha256:' + 'a'.repeat(64)), undefined);
  assert.equal(digestProblem('sha512:' + 'a'.repeat(128)), undefined);
  assert.equal(digestProblem('nope'), 'invalid checksum digest format');
  assert.equal(digestProblem('sha256:abc'), 'invalid checksum digest length');
  assert.equal(digestProblem('md5:abc'), 'unsupported digest algorithm');
  assert.equal(digestProblem('sha256:' + 'A'.repeat(64)), 'invalid checksum digest format');
});
