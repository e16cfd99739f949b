// Errors across the bus: a failed reply carries the gRPC code and the message in the micro
// service API's error headers, so any NATS client sees a standard service error too.
import type { Msg, MsgHdrs } from '@nats-io/nats-core';
import { errors } from '@nats-io/nats-core';
import { BerthError, Code, fromStatus, toBerthError } from '@berth/errdefs';
import { H, headers } from './headers.js';

export function errorHeaders(err: unknown, into: MsgHdrs = headers()): MsgHdrs {
  const e = toBerthError(err);
  into.set(H.errorCode, String(e.code));
  into.set(H.errorMessage, headerText(e.message));
  return into;
}

/**
 * A message as a header value. Messages quote what callers sent (names, filters), and a line
 * break in a NATS header value makes the client throw, which would crash the service that
 * answers: breaks are written as escapes instead.
 */
export function headerText(message: string): string {
  return message.replace(/[\r\n]/g, (c) => (c === '\r' ? '\\r' : '\\n'));
}

/** The error a reply or a frame carries (our error headers), or undefined when it is a success. */
export function errorFrom(msg: Pick<Msg, 'headers'>): BerthError | undefined {
  const h = msg.headers;
  if (!h?.has(H.errorCode)) return undefined;
  return fromStatus(Number(h.get(H.errorCode)), h.get(H.errorMessage));
}

/** Nobody serves the subject: NATS says so at once (a 503 to the reply subject). */
export function noResponders(what: string): BerthError {
  return new BerthError(Code.Unavailable, `${what}: service not running (no responders)`);
}

/** A failure to publish as a Berth error. */
export function publishFailure(err: unknown, what: string): BerthError {
  if (err instanceof BerthError) return err;
  if (err instanceof Error && /max_payload size exceeded/.test(err.message)) return tooLarge(what);
  if (err instanceof errors.ClosedConnectionError || err instanceof errors.DrainingConnectionError) {
    return new BerthError(Code.Unavailable, `${what}: connection to NATS closed`);
  }
  return toBerthError(err);
}

/** A message larger than the NATS server takes: say which limit to raise. */
export function tooLarge(what: string, size?: number, max?: number): BerthError {
  const sizes = size !== undefined ? ` (${size} bytes, the server takes ${max})` : '';
  return new BerthError(Code.ResourceExhausted, `${what}: message larger than the NATS server's max_payload${sizes}: raise max_payload (gRPC allows 16 MiB)`);
}
