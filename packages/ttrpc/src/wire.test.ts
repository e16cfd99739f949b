import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import protobuf from 'protobufjs';
import { Code } from '@berth/errdefs';
import { HEADER_LENGTH, MAX_MESSAGE_LENGTH } from './frame.js';
import { decodeRequest, decodeResponse, encodeRequestFrame, encodeResponseFrame } from './wire.js';
import { errorOf, statusOf } from './status.js';
import { BerthError, notFound } from '@berth/errdefs';

// An independent encoder (protobufjs) for ttrpc's messages, to check the hand-written one.
const { root } = protobuf.parse(`
  syntax = "proto3";
  package ttrpc;
  message KeyValue { string key = 1; string value = 2; }
  message Request { string service = 1; string method = 2; bytes payload = 3; int64 timeout_nano = 4; repeated KeyValue metadata = 5; }
  message Status { int32 code = 1; string message = 2; }
  message Response { Status status = 1; bytes payload = 2; }
`, { keepCase: true });
const Req = root.lookupType('ttrpc.Request');
const Res = root.lookupType('ttrpc.Response');
const body = (frame: Buffer) => frame.subarray(HEADER_LENGTH);

describe('ttrpc messages', () => {
  test('a request reads the same with protobufjs', () => {
    const f = encodeRequestFrame(3, 0, {
      service: 'containerd.task.v2.Task',
      method: 'State',
      payload: Buffer.from([1, 2, 3]),
      timeoutNano: 5_000_000_000,
      metadata: { 'containerd-namespace': 'default', x: ['a', 'b'], 'é': '' },
    });
    assert.equal(f.readUInt32BE(0), f.length - HEADER_LENGTH);
    const m = Req.toObject(Req.decode(body(f)), { longs: Number, bytes: Array }) as any;
    assert.deepEqual(m, {
      service: 'containerd.task.v2.Task',
      method: 'State',
      payload: [1, 2, 3],
      timeout_nano: 5_000_000_000,
      metadata: [{ key: 'containerd-namespace', value: 'default' }, { key: 'x', value: 'a' }, { key: 'x', value: 'b' }, { key: 'é' }],
    });
  });

  test('a request from protobufjs decodes, negative timeouts (a passed Go deadline) included', () => {
    const bytes = Req.encode(Req.fromObject({ service: 's', method: 'm', payload: Buffer.from('p'), timeout_nano: -1500, metadata: [{ key: 'k', value: 'v1' }, { key: 'k', value: 'v2' }] })).finish();
    const r = decodeRequest(bytes);
    assert.equal(r.service, 's');
    assert.equal(r.method, 'm');
    assert.equal(r.payload!.toString(), 'p');
    assert.equal(r.timeoutNano, -1500);
    assert.deepEqual(r.metadata, { k: ['v1', 'v2'] });
    assert.equal(decodeRequest(Req.encode({ service: 's', method: 'm' }).finish()).payload, undefined, 'absent payload stays absent');
  });

  test('responses round trip through protobufjs both ways', () => {
    const f = encodeResponseFrame(5, { code: Code.NotFound, message: 'container "x": not found' }, Buffer.from('zz'));
    const m = Res.toObject(Res.decode(body(f)), { bytes: String }) as any;
    assert.deepEqual(m, { status: { code: 5, message: 'container "x": not found' }, payload: Buffer.from('zz').toString('base64') });
    const ok = decodeResponse(body(encodeResponseFrame(7, undefined)));
    assert.deepEqual(ok.status, { code: 0, message: '' }, 'OK carries an empty status, as Go sends it');
    const d = decodeResponse(Res.encode(Res.fromObject({ status: { code: 14, message: 'down' }, payload: Buffer.from('q') })).finish());
    assert.deepEqual(d.status, { code: 14, message: 'down' });
    assert.equal(d.payload!.toString(), 'q');
  });

  test('a request past 4 MiB is refused with ResourceExhausted before anything is written', () => {
    assert.throws(
      () => encodeRequestFrame(1, 0, { service: 's', method: 'm', payload: Buffer.alloc(MAX_MESSAGE_LENGTH) }),
      (e: any) => e instanceof BerthError && e.code === Code.ResourceExhausted && /exceed maximum message size/.test(e.message),
    );
  });

  test('an oversized response becomes a ResourceExhausted status', () => {
    const d = decodeResponse(body(encodeResponseFrame(1, undefined, Buffer.alloc(MAX_MESSAGE_LENGTH))));
    assert.equal(d.status!.code, Code.ResourceExhausted);
    assert.equal(d.payload, undefined);
  });

  test('malformed bytes are InvalidArgument', () => {
    assert.throws(() => decodeRequest(Buffer.from([0x0a, 0x05, 0x41])), (e: any) => e.code === Code.InvalidArgument);
  });

  test('errors map to statuses and back through errdefs', () => {
    assert.deepEqual(statusOf(notFound('container "a"')), { code: Code.NotFound, message: 'container "a": not found' });
    assert.deepEqual(statusOf(new Error('boom')), { code: Code.Unknown, message: 'boom' });
    const e = errorOf({ code: Code.FailedPrecondition, message: 'task must be stopped' });
    assert.ok(e instanceof BerthError);
    assert.equal(e.code, Code.FailedPrecondition);
    assert.equal(e.message, 'task must be stopped');
    assert.equal(errorOf({ code: 99, message: 'odd' }).code, Code.Unknown);
  });
});
