// ttrpc's frame: a 10-byte header (data length, stream id, both big-endian u32; message type;
// flags) and the data. The reader keeps the connection usable after an oversized frame by
// skipping its data rather than buffering it, since the peer's next frame follows it intact.

export const HEADER_LENGTH = 10;
/** Largest data length the protocol accepts (4 MiB; larger frames are refused, not read). */
export const MAX_MESSAGE_LENGTH = 4 << 20;

export const MessageType = { Request: 1, Response: 2, Data: 3 } as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export const Flags = {
  /** Request or data: the sender sends no more data on this stream. */
  RemoteClosed: 0x1,
  /** Request: non-unary, and the sender still sends data. */
  RemoteOpen: 0x2,
  /** Data: the frame carries no message (a zero-length message is otherwise an empty one). */
  NoData: 0x4,
} as const;

export interface FrameSink {
  frame(streamId: number, type: number, flags: number, data: Buffer): void;
  /** A frame longer than MAX_MESSAGE_LENGTH was skipped; its data never reached memory. */
  oversize(streamId: number, type: number, flags: number, length: number): void;
}

export function writeHeader(buf: Buffer, length: number, streamId: number, type: number, flags: number): void {
  buf.writeUInt32BE(length, 0);
  buf.writeUInt32BE(streamId, 4);
  buf[8] = type;
  buf[9] = flags;
}

/** One buffer holding header and data, so a frame is one socket write. */
export function encodeFrame(streamId: number, type: number, flags: number, data?: Uint8Array): Buffer {
  const len = data ? data.length : 0;
  const buf = Buffer.allocUnsafe(HEADER_LENGTH + len);
  writeHeader(buf, len, streamId, type, flags);
  if (len) buf.set(data!, HEADER_LENGTH);
  return buf;
}

const enum State {
  Header,
  Body,
  Discard,
}

/**
 * Turns socket chunks into frames, however they are split or joined. A frame wholly inside one
 * chunk is handed on as a view of it (no copy); one spread over chunks is gathered once into a
 * buffer of its exact size.
 */
export class FrameReader {
  private state = State.Header;
  private readonly header = Buffer.allocUnsafe(HEADER_LENGTH);
  private headerFill = 0;
  private body: Buffer | null = null;
  private bodyFill = 0;
  private remaining = 0;
  private streamId = 0;
  private type = 0;
  private flags = 0;
  private length = 0;

  constructor(
    private readonly sink: FrameSink,
    private readonly maxLength = MAX_MESSAGE_LENGTH,
  ) {}

  push(chunk: Buffer): void {
    let off = 0;
    const end = chunk.length;
    while (off < end) {
      if (this.state === State.Header) {
        if (this.headerFill === 0 && end - off >= HEADER_LENGTH) {
          this.parseHeader(chunk, off);
          off += HEADER_LENGTH;
        } else {
          const n = Math.min(HEADER_LENGTH - this.headerFill, end - off);
          chunk.copy(this.header, this.headerFill, off, off + n);
          this.headerFill += n;
          off += n;
          if (this.headerFill < HEADER_LENGTH) return;
          this.headerFill = 0;
          this.parseHeader(this.header, 0);
        }
        if (this.length > this.maxLength) {
          this.state = State.Discard;
          this.remaining = this.length;
        } else if (this.length === 0) {
          this.sink.frame(this.streamId, this.type, this.flags, EMPTY);
        } else if (end - off >= this.length) {
          const data = chunk.subarray(off, off + this.length);
          off += this.length;
          this.sink.frame(this.streamId, this.type, this.flags, data);
        } else {
          this.state = State.Body;
          this.body = Buffer.allocUnsafe(this.length);
          this.bodyFill = 0;
        }
      } else if (this.state === State.Body) {
        const n = Math.min(this.length - this.bodyFill, end - off);
        chunk.copy(this.body!, this.bodyFill, off, off + n);
        this.bodyFill += n;
        off += n;
        if (this.bodyFill === this.length) {
          const data = this.body!;
          this.body = null;
          this.state = State.Header;
          this.sink.frame(this.streamId, this.type, this.flags, data);
        }
      } else {
        const n = Math.min(this.remaining, end - off);
        this.remaining -= n;
        off += n;
        if (this.remaining === 0) {
          this.state = State.Header;
          this.sink.oversize(this.streamId, this.type, this.flags, this.length);
        }
      }
    }
  }

  private parseHeader(buf: Buffer, off: number): void {
    this.length = buf.readUInt32BE(off);
    this.streamId = buf.readUInt32BE(off + 4);
    this.type = buf[off + 8]!;
    this.flags = buf[off + 9]!;
  }
}

const EMPTY = Buffer.alloc(0);
