// nats.js gathers a message that spans several socket reads in a buffer that starts at the size
// of the first read's remainder and doubles as it fills: each growth a zero-filled allocation and
// a copy of everything so far. A 1 MiB stream frame (socket reads are 64 KiB) cost about 3.5 MiB
// of allocation and three copies, and stayed in a 2 MiB buffer while queued: in a profile of the
// gateway forwarding a Read it was most of the process's time (growth, copies and the collector).
// The parser knows the message's size as soon as the payload starts, so the buffer is made that
// size once, uninitialised: one copy per byte and nothing held beyond the message.
//
// This reaches into the parser's state (it is exported as `@nats-io/nats-core/internal`); where
// that state is not what this expects, nothing changes and the parser runs as it came.
import { Parser, State } from '@nats-io/nats-core/internal';

interface PayloadBuffer {
  _buf: Uint8Array;
  _off: number;
  readonly capacity: number;
  bytes(o: { copy: boolean }): Uint8Array;
}
interface ParserState {
  state: number;
  ma?: { size: number };
  msgBuf?: PayloadBuffer;
}

let installed = false;

/** Makes every NATS connection of this process gather a large message in one buffer of its size. */
export function presizePayloads(): void {
  if (installed) return;
  installed = true;
  const proto = Parser.prototype as unknown as { parse(buf: Uint8Array): void };
  const parse = proto.parse;
  if (typeof parse !== 'function' || typeof State?.MSG_PAYLOAD !== 'number') return;
  proto.parse = function (this: ParserState, buf: Uint8Array): void {
    parse.call(this, buf);
    // a payload left unfinished by this read: its buffer was just made from the read's remainder
    const mb = this.msgBuf;
    const size = this.ma?.size;
    if (this.state !== State.MSG_PAYLOAD || !mb || typeof size !== 'number' || typeof mb.capacity !== 'number' || mb.capacity >= size) return;
    if (!(mb._buf instanceof Uint8Array) || typeof mb._off !== 'number') return;
    const have = mb.bytes({ copy: false });
    const whole = new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, have.length);
    whole.set(have);
    mb._buf = whole;
    mb._off = 0;
  };
}

/** @internal for the test: whether the parser is the presizing one */
export function payloadsPresized(): boolean {
  return installed;
}
