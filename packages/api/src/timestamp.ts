export interface Timestamp {
  seconds: number;
  nanos: number;
}

export function toTimestamp(d: Date | number = Date.now()): Timestamp {
  const ms = typeof d === 'number' ? d : d.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

// Wall clock with nanoseconds, as containerd stamps events: the wall time at start plus the
// monotonic clock since (Date.now() alone has milliseconds only).
const wallAtStart = BigInt(Date.now()) * 1_000_000n;
const monoAtStart = process.hrtime.bigint();

export function nowTimestamp(): Timestamp {
  const ns = wallAtStart + (process.hrtime.bigint() - monoAtStart);
  return { seconds: Number(ns / 1_000_000_000n), nanos: Number(ns % 1_000_000_000n) };
}

export function fromTimestamp(ts: { seconds: number | string; nanos: number } | null | undefined): Date | undefined {
  if (!ts) return undefined;
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}
