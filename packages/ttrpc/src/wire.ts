// ttrpc's own messages in protobuf wire format, written by hand: they are on the path of every
// call, and encoding straight into the frame buffer (after its header) saves a copy and the
// object churn of a generic codec.
//
//   ttrpc.Request  { string service = 1; string method = 2; bytes payload = 3;
//                    int64 timeout_nano = 4; repeated KeyValue metadata = 5; }
//   ttrpc.KeyValue { string key = 1; string value = 2; }
//   ttrpc.Response { google.rpc.Status status = 1; bytes payload = 2; }
//   google.rpc.Status { int32 code = 1; string message = 2; repeated Any details = 3; }
import { BerthError, Code } from '@berth/errdefs';
import { HEADER_LENGTH, MAX_MESSAGE_LENGTH, MessageType, writeHeader } from './frame.js';

/** Metadata as ttrpc carries it: a key may repeat, so each key has a list of values. */
export type Metadata = Record<string, string[]>;
/** What callers may pass: a single value or several per key. */
export type MetadataInit = Record<string, string | readonly string[]>;

export interface Request {
  service: string;
  method: string;
  /** Absent (undefined) differs from empty for streams: it says whether a first message came. */
  payload?: Uint8Array;
  timeoutNano?: number;
  metadata?: MetadataInit;
}

export interface Status {
  code: number;
  message: string;
}

export interface Response {
  status?: Status;
  payload?: Uint8Array;
}

// ---- sizes --------------------------------------------------------------------------------

function varintSize(v: number): number {
  if (v < 0) return 10; // int64 negatives take ten bytes
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

const lenField = (len: number) => 1 + varintSize(len) + len;

// ---- writer -------------------------------------------------------------------------------

class Writer {
  constructor(
    readonly buf: Buffer,
    public off: number,
  ) {}
  varint(v: number): void {
    if (v < 0) {
      // two's complement over 64 bits, as Go writes a negative int64
      let big = BigInt.asUintN(64, BigInt(Math.trunc(v)));
      while (big >= 0x80n) {
        this.buf[this.off++] = Number(big & 0x7fn) | 0x80;
        big >>= 7n;
      }
      this.buf[this.off++] = Number(big);
      return;
    }
    while (v >= 0x80) {
      this.buf[this.off++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.off++] = v;
  }
  tag(field: number, wire: number): void {
    this.buf[this.off++] = (field << 3) | wire;
  }
  string(field: number, s: string, len: number): void {
    this.tag(field, 2);
    this.varint(len);
    this.off += this.buf.write(s, this.off, 'utf8');
  }
  bytes(field: number, b: Uint8Array): void {
    this.tag(field, 2);
    this.varint(b.length);
    this.buf.set(b, this.off);
    this.off += b.length;
  }
}

function tooLarge(what: string, length: number): BerthError {
  return new BerthError(Code.ResourceExhausted, `${what} length ${length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`);
}

function metadataEntries(md: MetadataInit | undefined): [string, string][] {
  const out: [string, string][] = [];
  if (!md) return out;
  for (const key of Object.keys(md)) {
    const v = md[key]!;
    if (typeof v === 'string') out.push([key, v]);
    else for (const x of v) out.push([key, x]);
  }
  return out;
}

/** A whole request frame (header and encoded Request); ResourceExhausted past the size limit. */
export function encodeRequestFrame(streamId: number, flags: number, req: Request): Buffer {
  const serviceLen = Buffer.byteLength(req.service);
  const methodLen = Buffer.byteLength(req.method);
  let size = lenField(serviceLen) + lenField(methodLen);
  // proto3 leaves out empty bytes; a streaming request without a first message has none
  if (req.payload && req.payload.length) size += lenField(req.payload.length);
  if (req.timeoutNano) size += 1 + varintSize(req.timeoutNano);
  const md = metadataEntries(req.metadata);
  const kvLens: number[] = [];
  for (const [k, v] of md) {
    const kl = Buffer.byteLength(k);
    const vl = Buffer.byteLength(v);
    const inner = (kl ? lenField(kl) : 0) + (vl ? lenField(vl) : 0);
    kvLens.push(kl, vl, inner);
    size += lenField(inner);
  }
  if (size > MAX_MESSAGE_LENGTH) throw tooLarge('message', size);
  const w = new Writer(Buffer.allocUnsafe(HEADER_LENGTH + size), HEADER_LENGTH);
  writeHeader(w.buf, size, streamId, MessageType.Request, flags);
  w.string(1, req.service, serviceLen);
  w.string(2, req.method, methodLen);
  if (req.payload && req.payload.length) w.bytes(3, req.payload);
  if (req.timeoutNano) {
    w.tag(4, 0);
    w.varint(req.timeoutNano);
  }
  for (let i = 0; i < md.length; i++) {
    const [k, v] = md[i]!;
    const kl = kvLens[i * 3]!;
    const vl = kvLens[i * 3 + 1]!;
    w.tag(5, 2);
    w.varint(kvLens[i * 3 + 2]!);
    if (kl) w.string(1, k, kl);
    if (vl) w.string(2, v, vl);
  }
  return w.buf;
}

/**
 * A whole response frame. Like Go's server it always carries a status (empty for OK). An
 * oversized payload becomes a ResourceExhausted status instead, so the caller still gets an
 * answer on its stream.
 */
export function encodeResponseFrame(streamId: number, status: Status | undefined, payload?: Uint8Array): Buffer {
  const code = status?.code ?? 0;
  const message = status?.message ?? '';
  const msgLen = Buffer.byteLength(message);
  const statusLen = (code ? 1 + varintSize(code) : 0) + (msgLen ? lenField(msgLen) : 0);
  let size = lenField(statusLen);
  if (payload && payload.length) size += lenField(payload.length);
  if (size > MAX_MESSAGE_LENGTH) {
    return encodeResponseFrame(streamId, { code: Code.ResourceExhausted, message: tooLarge('response', size).message });
  }
  const w = new Writer(Buffer.allocUnsafe(HEADER_LENGTH + size), HEADER_LENGTH);
  writeHeader(w.buf, size, streamId, MessageType.Response, 0);
  w.tag(1, 2);
  w.varint(statusLen);
  if (code) {
    w.tag(1, 0);
    w.varint(code);
  }
  if (msgLen) w.string(2, message, msgLen);
  if (payload && payload.length) w.bytes(2, payload);
  return w.buf;
}

// ---- reader -------------------------------------------------------------------------------

class Reader {
  off: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.off = start;
  }
  varint(): number {
    let result = 0;
    let mul = 1;
    const start = this.off;
    for (let i = 0; i < 7; i++) {
      if (this.off >= this.end) throw malformed();
      const b = this.buf[this.off++]!;
      result += (b & 0x7f) * mul;
      if (!(b & 0x80)) return result;
      mul *= 128;
    }
    // eight bytes or more (a large or negative int64): exact only with BigInt
    this.off = start;
    let v = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.off >= this.end) throw malformed();
      const b = this.buf[this.off++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return Number(BigInt.asIntN(64, v));
      shift += 7n;
    }
    throw malformed();
  }
  lengthDelimited(): [number, number] {
    const len = this.varint();
    const start = this.off;
    if (len > this.end - start) throw malformed();
    this.off += len;
    return [start, start + len];
  }
  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.off += 8;
        break;
      case 2:
        this.lengthDelimited();
        return;
      case 5:
        this.off += 4;
        break;
      default:
        throw malformed();
    }
    if (this.off > this.end) throw malformed();
  }
  string(): string {
    const [s, e] = this.lengthDelimited();
    return Buffer.from(this.buf.buffer, this.buf.byteOffset + s, e - s).toString('utf8');
  }
  bytes(): Buffer {
    const [s, e] = this.lengthDelimited();
    return Buffer.from(this.buf.buffer, this.buf.byteOffset + s, e - s);
  }
}

function malformed(): BerthError {
  return new BerthError(Code.InvalidArgument, 'malformed protobuf message');
}

export interface DecodedRequest {
  service: string;
  method: string;
  payload: Buffer | undefined;
  timeoutNano: number;
  metadata: Metadata;
}

export function decodeRequest(buf: Uint8Array): DecodedRequest {
  const r = new Reader(buf);
  const out: DecodedRequest = { service: '', method: '', payload: undefined, timeoutNano: 0, metadata: {} };
  while (r.off < r.end) {
    const tag = r.varint();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1 && wire === 2) out.service = r.string();
    else if (field === 2 && wire === 2) out.method = r.string();
    else if (field === 3 && wire === 2) out.payload = r.bytes();
    else if (field === 4 && wire === 0) out.timeoutNano = r.varint();
    else if (field === 5 && wire === 2) {
      const [s, e] = r.lengthDelimited();
      const kv = new Reader(buf, s, e);
      let key = '';
      let value = '';
      while (kv.off < kv.end) {
        const t = kv.varint();
        if (t === 0x0a) key = kv.string();
        else if (t === 0x12) value = kv.string();
        else kv.skip(t & 7);
      }
      (out.metadata[key] ??= []).push(value);
    } else r.skip(wire);
  }
  return out;
}

export interface DecodedResponse {
  status: Status | undefined;
  payload: Buffer | undefined;
}

export function decodeResponse(buf: Uint8Array): DecodedResponse {
  const r = new Reader(buf);
  const out: DecodedResponse = { status: undefined, payload: undefined };
  while (r.off < r.end) {
    const tag = r.varint();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1 && wire === 2) {
      const [s, e] = r.lengthDelimited();
      const st = new Reader(buf, s, e);
      const status: Status = { code: 0, message: '' };
      while (st.off < st.end) {
        const t = st.varint();
        if (t === 0x08) status.code = st.varint() | 0;
        else if (t === 0x12) status.message = st.string();
        else st.skip(t & 7); // details (repeated Any): nothing here reads them
      }
      out.status = status;
    } else if (field === 2 && wire === 2) out.payload = r.bytes();
    else r.skip(wire);
  }
  return out;
}
