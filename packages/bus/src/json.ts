// The small internal endpoints between Berth services (namespace usage, GC barriers, blob paths)
// speak JSON rather than protobuf: these are their two ends, in one place.
import { BerthError, Code } from '@berth/errdefs';

/** A JSON request body (empty: `{}`); anything else is the caller's error. */
export function parseJson<T>(data: Uint8Array): T {
  try {
    return JSON.parse(Buffer.from(data).toString('utf8') || '{}') as T;
  } catch {
    throw new BerthError(Code.InvalidArgument, 'request must be JSON');
  }
}

export const jsonBytes = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v));
