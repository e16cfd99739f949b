import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameReader, MAX_MESSAGE_LENGTH, MessageType, Flags, encodeFrame, HEADER_LENGTH } from './frame.js';

type Got = { id: number; type: number; flags: number; data: string } | { oversize: number; id: number; type: number };

function reader(max?: number): { r: FrameReader; got: Got[] } {
  const got: Got[] = [];
  const r = new FrameReader(
    {
      frame: (id, type, flags, data) => got.push({ id, type, flags, data: data.toString() }),
      oversize: (id, type, _flags, length) => got.push({ oversize: length, id, type }),
    },
    max,
  );
  return { r, got };
}

const frames = [
  encodeFrame(1, MessageType.Request, 0, Buffer.from('hello')),
  encodeFrame(3, MessageType.Data, Flags.RemoteClosed | Flags.NoData),
  encodeFrame(5, MessageType.Response, 0, Buffer.from('x'.repeat(300))),
];
const expected = [
  { id: 1, type: 1, flags: 0, data: 'hello' },
  { id: 3, type: 3, flags: 5, data: '' },
  { id: 5, type: 2, flags: 0, data: 'x'.repeat(300) },
];

describe('framing', () => {
  test('the header is length, stream id (big-endian), type, flags', () => {
    const f = encodeFrame(0x01020304, MessageType.Data, Flags.RemoteClosed, Buffer.from('ab'));
    assert.deepEqual([...f], [0, 0, 0, 2, 1, 2, 3, 4, 3, 1, 0x61, 0x62]);
    assert.equal(HEADER_LENGTH, 10);
    assert.equal(MAX_MESSAGE_LENGTH, 4 * 1024 * 1024);
  });

  test('several frames in one chunk', () => {
    const { r, got } = reader();
    r.push(Buffer.concat(frames));
    assert.deepEqual(got, expected);
  });

  test('frames split at every possible byte', () => {
    const all = Buffer.concat(frames);
    for (let cut = 1; cut < all.length; cut++) {
      const { r, got } = reader();
      r.push(all.subarray(0, cut));
      r.push(all.subarray(cut));
      assert.deepEqual(got, expected, `cut at ${cut}`);
    }
    const { r, got } = reader();
    for (const b of all) r.push(Buffer.from([b]));
    assert.deepEqual(got, expected, 'one byte at a time');
  });

  test('an oversized frame is skipped, not buffered, and the next frame reads intact', () => {
    const { r, got } = reader(16);
    const big = encodeFrame(7, MessageType.Request, 0, Buffer.alloc(17, 0x41));
    const all = Buffer.concat([frames[0]!, big, frames[1]!]);
    for (let i = 0; i < all.length; i += 3) r.push(all.subarray(i, i + 3));
    assert.deepEqual(got, [expected[0], { oversize: 17, id: 7, type: 1 }, expected[1]]);
  });

  test('a frame of exactly the maximum is accepted', () => {
    const { r, got } = reader(16);
    r.push(encodeFrame(9, MessageType.Data, 0, Buffer.alloc(16, 0x42)));
    assert.deepEqual(got, [{ id: 9, type: 3, flags: 0, data: 'B'.repeat(16) }]);
  });
});
