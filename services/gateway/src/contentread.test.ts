import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { codec } from '@berth/api';
import { Code } from '@berth/errdefs';
import { readRange } from '@berth/content/range';
import { frameAround } from './contentread.js';

const RRes = codec('containerd.services.content.v1.ReadContentResponse');
const head = 17;

test('a ReadContentResponse framed around data in place decodes to its offset and data', () => {
  for (const n of [0, 1, 127, 128, 16_383, 16_384, 65_536, 1 << 20]) {
    for (const offset of [0, 1, 127, 128, 1 << 20, 2 ** 32 + 5, 2 ** 40 + 3]) {
      const buf = Buffer.alloc(head + n);
      randomFillSync(buf, head, n);
      const data = Buffer.from(buf.subarray(head));
      const frame = frameAround(buf, n, offset);
      // as proto3 (and containerd) writes it: the codec's bytes, less a zero offset
      const want = Buffer.from(RRes.encode({ offset, data }));
      assert.deepEqual(Buffer.from(frame), offset === 0 ? want.subarray(2) : want, `n=${n} offset=${offset}`);
      const back = RRes.decode(frame);
      assert.equal(Number(back.offset ?? 0), offset);
      assert.ok(Buffer.from(back.data).equals(data));
    }
  }
});

test('read ranges follow containerd: to the end for size 0 or past it, OutOfRange past the blob', () => {
  assert.deepEqual(readRange(0, 0, 10), { offset: 0, length: 10 });
  assert.deepEqual(readRange(4, 3, 10), { offset: 4, length: 3 });
  assert.deepEqual(readRange(4, 100, 10), { offset: 4, length: 6 });
  assert.deepEqual(readRange(-5, 0, 10), { offset: 0, length: 10 });
  assert.deepEqual(readRange(10, 0, 10), { offset: 10, length: 0 });
  assert.throws(() => readRange(11, 0, 10), (e: { code: Code; message: string }) => e.code === Code.OutOfRange && e.message === 'read past object length 10 bytes');
});
