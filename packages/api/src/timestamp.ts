export interface Timestamp {
  seconds: number;
  nanos: number;
}

export function toTimestamp(d: Date | number = Date.now()): Timestamp {
  const ms = typeof d === 'number' ? d : d.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/** A timestamp from process.hrtime-free wall clock with nanosecond field filled. */
export function nowTimestamp(): Timestamp {
  return toTimestamp(Date.now());
}

export function fromTimestamp(ts: { seconds: number | string; nanos: number } | null | undefined): Date | undefined {
  if (!ts) return undefined;
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}
