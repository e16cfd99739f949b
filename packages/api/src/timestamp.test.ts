import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareTimestamps, formatTimestamp, nowTimestamp, parseTimestamp, toTimestamp } from './timestamp.js';

test('RFC 3339 round trip keeps nanoseconds', () => {
  const ts = { seconds: 1700000000, nanos: 123456789 };
  assert.equal(formatTimestamp(ts), '2023-11-14T22:13:20.123456789Z');
  assert.deepEqual(parseTimestamp(formatTimestamp(ts)), ts);
  assert.equal(formatTimestamp({ seconds: 1700000000, nanos: 120000000 }), '2023-11-14T22:13:20.12Z');
  assert.equal(formatTimestamp({ seconds: 1700000000, nanos: 0 }), '2023-11-14T22:13:20Z');
});

test('parses what Date.toISOString wrote and other zones; refuses the rest', () => {
  assert.deepEqual(parseTimestamp('2023-11-14T22:13:20.120Z'), { seconds: 1700000000, nanos: 120000000 });
  assert.deepEqual(parseTimestamp('2023-11-14T23:13:20.000000001+01:00'), { seconds: 1700000000, nanos: 1 });
  assert.equal(parseTimestamp('yesterday'), undefined);
  assert.equal(parseTimestamp('2023-11-14T22:13:20.1234567891Z'), undefined);
});

test('ordering, and the clock has sub-millisecond resolution', () => {
  assert.ok(compareTimestamps({ seconds: 1, nanos: 5 }, { seconds: 1, nanos: 6 }) < 0);
  assert.ok(compareTimestamps({ seconds: 2, nanos: 0 }, { seconds: 1, nanos: 999999999 }) > 0);
  assert.equal(compareTimestamps(toTimestamp(1500), { seconds: 1, nanos: 500000000 }), 0);
  // a millisecond clock would give nanos that are all multiples of 1e6
  const samples = Array.from({ length: 20 }, () => nowTimestamp().nanos);
  assert.ok(samples.some((n) => n % 1e6 !== 0), `${samples}`);
});
