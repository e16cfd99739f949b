// Content.Read from the blob's file. The gateway and the node's content service share the node's
// disk, so once the content service has said what the namespace may read (its BlobPath answer,
// NotFound as its Read gives it), the bytes go from the committed
// file to the gRPC client here instead of through the content process, nats-server and back: on
// this 2-core machine those two hops cost three times containerd's whole Read in CPU, and a
// small Read paid a stream's handshake on top of the lookup. A committed file is read-only and
// never changes, and one that is open keeps its bytes if the collector removes it meanwhile.
// Where the file cannot be opened here (a gateway that does not see the content root), the call
// is forwarded over the bus as any other. Wire of BlobPath: services/content/README.md.
import { closeSync, openSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { codec } from '@berth/api';
import { streamed, type CallContext, type OnCancel } from '@berth/bus';
import { BerthError, Code } from '@berth/errdefs';
import { readRange } from '@berth/content/range';
import { callContext, status } from './forward.js';
import { Outflow } from './outflow.js';

export const contentReadPath = '/containerd.services.content.v1.Content/Read';

/** As containerd's Read: messages of at most 1 MiB. */
const chunkSize = 1 << 20;
/** Reads up to this size are done at once on the calling thread (from the page cache: microseconds). */
const smallRead = 64 << 10;
/** room before the data for the message's fields: offset (tag, varint) and data (tag, length) */
const head = 1 + 10 + 1 + 5;

const ReadReq = codec('containerd.services.content.v1.ReadContentRequest');

type Call = grpc.ServerWritableStream<Buffer, Buffer>;

/**
 * A ReadContentResponse around `buf[head, head + n)`, written in place in front of the data (the
 * data is not copied): field 1 offset (omitted at 0, as proto3 encodes it), field 2 data.
 */
export function frameAround(buf: Buffer, n: number, offset: number): Buffer {
  let p = head;
  p = varintBefore(buf, p, n);
  buf[--p] = 0x12;
  if (offset > 0) {
    p = varintBefore(buf, p, offset);
    buf[--p] = 0x08;
  }
  return buf.subarray(p, head + n);
}

/** Writes `v` as a varint ending just before `end`; returns where it starts. */
function varintBefore(buf: Buffer, end: number, v: number): number {
  let len = 1;
  for (let x = v; x >= 0x80; x = Math.floor(x / 128)) len++;
  let p = end - len;
  const start = p;
  while (v >= 0x80) {
    buf[p++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[p] = v;
  return start;
}

/**
 * Asks the content service's BlobPath (through the gateway's read cache when there is one: the
 * answer holds until a content record changes, so a client's repeated Reads of one blob cost no
 * bus round trip).
 */
export type BlobPathLookup = (body: Buffer, ctx: CallContext, onCancel: OnCancel) => Promise<Uint8Array>;

// the lookup is short and its answer is kept for others: a client that goes meanwhile does not stop it
const noCancel: OnCancel = () => () => undefined;

interface BlobFile {
  path: string;
  size: number;
}

/**
 * The Read handler: from the file when it opens, else `forward` (the ordinary forwarder).
 * `blobPathSubject` is the node's content service's BlobPath.
 */
export function contentRead(blobPath: BlobPathLookup, forward: grpc.handleServerStreamingCall<Buffer, Buffer>): grpc.handleServerStreamingCall<Buffer, Buffer> {
  return (call: Call) => {
    void serve(blobPath, call).then(
      (served) => {
        if (!served) forward(call);
      },
      (err) => call.emit('error', status(err)),
    );
  };
}

/** false when the file could not be opened here: the caller forwards the call instead. */
async function serve(blobPath: BlobPathLookup, call: Call): Promise<boolean> {
  let req: { digest: string; offset: number; size: number };
  try {
    const r = ReadReq.decode(call.request);
    req = { digest: r.digest ?? '', offset: Number(r.offset ?? 0), size: Number(r.size ?? 0) };
  } catch {
    return false; // the content service words what is wrong with it
  }
  const ctx: CallContext = callContext(call);
  let answer: Uint8Array;
  try {
    answer = await blobPath(Buffer.from(JSON.stringify({ digest: req.digest })), ctx, noCancel);
  } catch (err) {
    // a malformed digest is worded by the content service's Read, as containerd words it
    if (err instanceof BerthError && err.code === Code.InvalidArgument) return false;
    throw err;
  }
  const file = JSON.parse(Buffer.from(answer).toString('utf8')) as BlobFile;
  const { offset, length } = readRange(req.offset, req.size, file.size);
  if (length <= smallRead) {
    const buf = Buffer.allocUnsafe(head + length);
    let fd: number;
    try {
      fd = openSync(file.path, 'r');
    } catch {
      return false;
    }
    let n = 0;
    try {
      while (n < length) {
        const got = readSync(fd, buf, head + n, length - n, offset + n);
        if (got === 0) break;
        n += got;
      }
    } finally {
      closeSync(fd);
    }
    if (n > 0 && !call.cancelled) call.write(frameAround(buf, n, 0));
    call.end();
    return true;
  }
  let fh: FileHandle;
  try {
    fh = await open(file.path, 'r');
  } catch {
    return false;
  }
  try {
    await stream(fh, offset, length, call);
  } finally {
    await fh.close();
  }
  return true;
}

/**
 * Sends the range a chunk at a time, reading the next one only while the client keeps up: at
 * most two messages are between this and HTTP/2 (each buffer is reused once its message went).
 */
async function stream(fh: FileHandle, offset: number, length: number, call: Call): Promise<void> {
  const out = new Outflow(call, 2);
  const bufs = [Buffer.allocUnsafe(head + Math.min(chunkSize, length)), Buffer.allocUnsafe(head + Math.min(chunkSize, length))];
  let sent = 0;
  for (let k = 0; sent < length; k++) {
    if (!(await out.room())) return; // cancelled
    const buf = bufs[k & 1]!;
    const want = Math.min(chunkSize, length - sent);
    const { bytesRead } = await fh.read(buf, head, want, offset + sent);
    if (bytesRead === 0) break;
    if (!out.write(frameAround(buf, bytesRead, sent))) return;
    streamed(bytesRead); // grpc-js copies each message: those copies are what to collect (bus collect.ts)
    sent += bytesRead;
  }
  if (await out.flushed()) call.end();
}
