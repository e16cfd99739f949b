// The one crossing between Berth's errors and ttrpc's google.rpc.Status. Codes and their
// meaning come from @berth/errdefs; this module only moves them on and off the wire.
import { BerthError, Code, fromStatus, kindError, toBerthError } from '@berth/errdefs';
import type { Status } from './wire.js';

/** The status a handler's failure is sent as. Non-Berth errors go as Unknown, like Go's ttrpc. */
export function statusOf(err: unknown): Status {
  const e = toBerthError(err);
  return { code: e.code, message: e.message };
}

/** The error a received non-OK status stands for. */
export function errorOf(status: Status): BerthError {
  return fromStatus(status.code, status.message);
}

/** What every call on a connection that went away fails with (Go's ttrpc.ErrClosed). */
export function closedError(cause?: unknown): BerthError {
  return new BerthError(Code.Unavailable, 'ttrpc: closed', cause === undefined ? undefined : { cause });
}

export const deadlineExceeded = () => kindError(Code.DeadlineExceeded);
export const canceled = () => kindError(Code.Canceled);
