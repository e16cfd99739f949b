import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BerthError, Code, fromStatus, kindError, notFound, toBerthError } from './index.js';

test('kind errors read like containerd wrapped errors', () => {
  const e = notFound('namespace "x"');
  assert.equal(e.code, Code.NotFound);
  assert.equal(e.message, 'namespace "x": not found');
  assert.equal(kindError(Code.AlreadyExists).message, 'already exists');
});

test('wrap keeps the code and prefixes the context', () => {
  const e = kindError(Code.FailedPrecondition, 'x').wrap('namespace.Labels');
  assert.equal(e.code, Code.FailedPrecondition);
  assert.equal(e.message, 'namespace.Labels: x: failed precondition');
});

test('foreign errors become Unknown, aborts become Canceled', () => {
  assert.equal(toBerthError(new Error('boom')).code, Code.Unknown);
  const abort = new Error('aborted');
  abort.name = 'AbortError';
  assert.equal(toBerthError(abort).code, Code.Canceled);
  assert.equal(toBerthError('str').message, 'str');
});

test('status round trip and unknown codes', () => {
  const e = fromStatus(Code.Unavailable, 'down');
  assert.ok(e instanceof BerthError);
  assert.equal(e.code, Code.Unavailable);
  assert.equal(fromStatus(99, 'odd').code, Code.Unknown);
});
