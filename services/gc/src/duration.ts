// Go's time.ParseDuration, which containerd's [plugins."io.containerd.gc.v1.scheduler"] uses:
// "100ms", "1m30s", "0"; a sign, decimals and units ns, us (µs), ms, s, m, h. In milliseconds.
import { invalidArgument } from '@berth/errdefs';

const units: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(text: string, what = 'duration'): number {
  const bad = () => invalidArgument(`${what}: time: invalid duration "${text}"`);
  let s = text.trim();
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    sign = s[0] === '-' ? -1 : 1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (!s) throw bad();
  let total = 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let at = 0;
  while (at < s.length) {
    re.lastIndex = at;
    const m = re.exec(s);
    if (!m) throw bad();
    total += Number(m[1]) * units[m[2]!]!;
    at = re.lastIndex;
  }
  return sign * total;
}
