// `berth ps`: docker's table of containers, newest first; running ones unless -a.
import { parseArgs } from 'node:util';
import { specFromAny } from '@berth/api';
import { client, containerCommon, unary } from '../grpc.js';
import { labels, type Container, type TaskProcess } from './lifecycle.js';

const ms = (t: { seconds: number; nanos: number } | null) => (t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0);

/** go-units' HumanDuration, as docker words ages. */
export function humanDuration(d: number): string {
  const s = Math.round(d / 1000);
  const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  if (s < 1) return 'Less than a second';
  if (s === 1) return '1 second';
  if (s < 60) return `${s} seconds`;
  const m = Math.round(s / 60);
  if (m === 1) return 'About a minute';
  if (m < 60) return `${m} minutes`;
  const h = Math.round(s / 3600);
  if (h === 1) return 'About an hour';
  if (h < 48) return `${h} hours`;
  if (h < 24 * 7 * 2) return plural(Math.floor(h / 24), 'day');
  if (h < 24 * 30 * 2) return plural(Math.floor(h / 24 / 7), 'week');
  if (h < 24 * 365 * 2) return plural(Math.floor(h / 24 / 30), 'month');
  return plural(Math.floor(h / 24 / 365), 'year');
}

export function status(c: Container, t: TaskProcess | undefined, now: number): { text: string; live: boolean } {
  if (t && (t.status === 'RUNNING' || t.status === 'PAUSED' || t.status === 'PAUSING')) {
    return { text: `Up ${humanDuration(now - ms(c.created_at))}${t.status === 'RUNNING' ? '' : ' (Paused)'}`, live: true };
  }
  if (t?.status === 'STOPPED') return { text: `Exited (${t.exit_status}) ${humanDuration(now - ms(t.exited_at))} ago`, live: false };
  const exit = c.labels[labels.exitStatus];
  if (exit !== undefined) return { text: `Exited (${exit}) ${humanDuration(now - Date.parse(c.labels[labels.finishedAt] ?? '') || 0)} ago`, live: false };
  return { text: 'Created', live: false };
}

function command(c: Container): string {
  let args: string[] = [];
  try {
    if (c.spec) args = specFromAny<{ process?: { args?: string[] } }>(c.spec).process?.args ?? [];
  } catch {
    // not a runtime spec
  }
  const s = args.join(' ');
  return `"${s.length > 20 ? `${s.slice(0, 19)}…` : s}"`;
}

export async function psCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { ...containerCommon, all: { type: 'boolean', short: 'a', default: false }, quiet: { type: 'boolean', short: 'q', default: false } } });
  const c = client(values.address);
  try {
    const [{ containers }, { tasks }] = await Promise.all([
      unary<{ containers: Container[] }>(c, '/containerd.services.containers.v1.Containers/List', { filters: [] }, values.namespace),
      unary<{ tasks: TaskProcess[] }>(c, '/containerd.services.tasks.v1.Tasks/List', { filter: '' }, values.namespace),
    ]);
    const byId = new Map(tasks.map((t) => [t.id || t.container_id, t]));
    const now = Date.now();
    const shown = containers
      .map((ct) => ({ ct, st: status(ct, byId.get(ct.id), now) }))
      .filter((x) => values.all || x.st.live)
      .sort((a, b) => ms(b.ct.created_at) - ms(a.ct.created_at));
    if (values.quiet) {
      for (const { ct } of shown) process.stdout.write(`${ct.id}\n`); // whole: our ids are the names commands take
      return;
    }
    const rows = [['CONTAINER ID', 'IMAGE', 'COMMAND', 'CREATED', 'STATUS', 'NAMES']];
    for (const { ct, st } of shown) rows.push([ct.id.slice(0, 12), ct.image, command(ct), `${humanDuration(now - ms(ct.created_at))} ago`, st.text, ct.id]);
    const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => r[col]!.length)));
    for (const r of rows) process.stdout.write(r.map((v, col) => v.padEnd(widths[col]! + 2)).join('').trimEnd() + '\n');
  } finally {
    c.close();
  }
}
