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

/** Orders two timestamps: negative when `a` is earlier, 0 when equal, positive when later. */
export function compareTimestamps(a: Timestamp, b: Timestamp): number {
  return Number(a.seconds) - Number(b.seconds) || a.nanos - b.nanos;
}

/** RFC 3339 with as many fraction digits as needed, up to nanoseconds (Go's RFC3339Nano, UTC). */
export function formatTimestamp(ts: Timestamp): string {
  const base = new Date(Number(ts.seconds) * 1000).toISOString().slice(0, 19);
  const frac = ts.nanos ? '.' + String(ts.nanos).padStart(9, '0').replace(/0+$/, '') : '';
  return `${base}${frac}Z`;
}

const rfc3339 = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/i;

/** Parses RFC 3339 keeping nanoseconds (a JS Date keeps milliseconds); undefined if it is not. */
export function parseTimestamp(text: string): Timestamp | undefined {
  const m = rfc3339.exec(text.trim());
  if (!m) return undefined;
  const ms = Date.parse(`${m[1]}${m[3]!.toUpperCase()}`);
  if (Number.isNaN(ms)) return undefined;
  return { seconds: ms / 1000, nanos: Number((m[2] ?? '').padEnd(9, '0')) };
}
