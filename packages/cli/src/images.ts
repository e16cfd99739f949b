// `berth pull`, `berth images`, `berth rmi`: images through the gateway's socket, with ctr's
// flags and environment (CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE). `berth pull` uses Berth's
// server-side pull (berth.images.v1.Transfer) and draws a live bar per layer (bytes, speed,
// ETA) on a terminal; elsewhere it prints plain lines as layers change state.
import * as grpc from '@grpc/grpc-js';
import { parseArgs } from 'node:util';
import type cliProgressType from 'cli-progress';
import { codec, method } from '@berth/api';
import { client, common, CommandError, failed, md, unary } from './grpc.js';

export function human(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

interface Layer {
  digest: string;
  media_type: string;
  offset: number;
  total: number;
  status: string;
}

interface PullProgress {
  pull_id: string;
  status: string;
  layers: Layer[];
  name: string;
  target: { digest: string; media_type: string; size: number } | null;
  subject: string;
}

const short = (d: string) => d.replace(/^sha256:/, '').slice(0, 12);
const kind = (mt: string) => (/layer|rootfs/.test(mt) ? 'layer' : /index|list/.test(mt) ? 'index' : /manifest/.test(mt) ? 'manifest' : 'config');

/** Live bars on a terminal: one per blob, with speed and ETA computed from what arrived. */
class Bars {
  private readonly multi: cliProgressType.MultiBar;
  constructor(cliProgress: typeof cliProgressType) {
    this.multi = new cliProgress.MultiBar(
      {
        format: '{name} |{bar}| {status} {bytes} {speed} {eta_text}',
        barsize: 24,
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        autopadding: true,
        forceRedraw: true,
      },
      cliProgress.Presets.shades_classic,
    );
  }
  private readonly bars = new Map<string, { bar: cliProgressType.SingleBar; t0: number; first: number }>();

  update(p: PullProgress): void {
    for (const l of p.layers) {
      let b = this.bars.get(l.digest);
      if (!b) {
        const bar = this.multi.create(Math.max(1, l.total), 0, this.payload(l, 0, 0));
        b = { bar, t0: Date.now(), first: l.offset };
        this.bars.set(l.digest, b);
      }
      const secs = (Date.now() - b.t0) / 1000;
      const rate = secs > 0.2 ? (l.offset - b.first) / secs : 0;
      b.bar.update(l.offset, this.payload(l, rate, rate > 0 ? (l.total - l.offset) / rate : 0));
    }
  }

  private payload(l: Layer, rate: number, eta: number) {
    const done = l.status !== 'waiting' && l.status !== 'downloading';
    return {
      name: `${kind(l.media_type)}-${short(l.digest)}`.padEnd(21),
      status: l.status.padEnd(11),
      bytes: `${human(l.offset)}/${human(l.total)}`.padEnd(21),
      speed: rate > 0 && !done ? `${human(rate)}/s` : '',
      eta_text: rate > 0 && !done ? `ETA ${eta.toFixed(1)}s` : '',
    };
  }

  stop(): void {
    this.multi.stop();
  }
}

/** Plain lines: a blob's state changes, and its bytes at most once a second. */
class Lines {
  constructor(private readonly out: NodeJS.WritableStream) {}
  private readonly seen = new Map<string, { status: string; at: number }>();
  update(p: PullProgress): void {
    for (const l of p.layers) {
      const s = this.seen.get(l.digest);
      const now = Date.now();
      if (!s || s.status !== l.status || (l.status === 'downloading' && now - s.at >= 1000)) {
        this.seen.set(l.digest, { status: l.status, at: now });
        this.out.write(`${kind(l.media_type)}-${l.digest}: ${l.status} ${human(l.offset)}/${human(l.total)}\n`);
      }
    }
  }
  stop(): void {}
}

/**
 * Runs a Transfer call that streams progress (pull, push): bars per layer on a terminal, plain
 * lines otherwise, on `out` (`berth run` keeps its stdout for the container's); Ctrl-C cancels it.
 * Resolves with the last progress, with its layers.
 */
export async function followProgress(path: string, req: Record<string, unknown>, address: string, namespace: string, out: NodeJS.WriteStream = process.stdout): Promise<PullProgress | undefined> {
  const m = method(path);
  const Req = codec(m.requestType);
  const Res = codec<PullProgress>(m.responseType);
  const c = client(address);
  // the bar library loads only for a terminal: the CLI's start is part of every pull's time
  const view = out.isTTY ? new Bars((await import('cli-progress')).default) : new Lines(out);
  let last: PullProgress | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      const call = c.makeServerStreamRequest(m.path, (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, Req.encode(req), md(namespace));
      process.once('SIGINT', () => call.cancel());
      call.on('data', (b: Buffer) => {
        const p = Res.decode(b);
        if (p.layers.length) view.update(p);
        last = { ...p, layers: p.layers.length ? p.layers : (last?.layers ?? []) };
      });
      call.on('error', (e: grpc.ServiceError) => reject(failed(e)));
      call.on('end', () => resolve());
    });
  } finally {
    view.stop();
    c.close();
  }
  return last;
}

export async function pullCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...common,
      platform: { type: 'string', multiple: true, default: [] },
      'all-platforms': { type: 'boolean', default: false },
      'plain-http': { type: 'boolean', default: false },
      snapshotter: { type: 'string', default: '' },
      user: { type: 'string', short: 'u' },
      label: { type: 'string', multiple: true, default: [] },
      'max-concurrent-downloads': { type: 'string', default: '0' },
      'skip-unpack': { type: 'boolean', default: false },
    },
  });
  const ref = positionals[0];
  if (!ref) throw new CommandError('please provide an image reference to pull');
  const [username = '', password = ''] = values.user ? [values.user.slice(0, values.user.indexOf(':') >>> 0), values.user.slice(values.user.indexOf(':') + 1)] : [];
  const labels = Object.fromEntries(values.label.map((l) => [l.slice(0, l.indexOf('=') >>> 0), l.slice(l.indexOf('=') + 1)]));
  const req = {
    ref,
    platforms: values.platform,
    all_platforms: values['all-platforms'],
    plain_http: values['plain-http'],
    snapshotter: values.snapshotter,
    skip_unpack: values['skip-unpack'],
    labels,
    username,
    password,
    max_concurrent_downloads: Number(values['max-concurrent-downloads']),
  };
  const t0 = Date.now();
  const last = await followProgress('/berth.images.v1.Transfer/Pull', req, values.address, values.namespace);
  const total = last?.layers.reduce((n, l) => n + l.total, 0) ?? 0;
  process.stdout.write(`${last?.name ?? ref}: ${last?.target?.digest ?? ''}\ndone: ${((Date.now() - t0) / 1000).toFixed(2)}s (${human(total)})\n`);
}

export async function pushCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...common,
      platform: { type: 'string', multiple: true, default: [] },
      'plain-http': { type: 'boolean', default: false },
      user: { type: 'string', short: 'u' },
      'max-concurrent-uploads': { type: 'string', default: '0' },
    },
  });
  const [ref, local] = positionals;
  if (!ref) throw new CommandError('please provide a remote image reference to push');
  const u = values.user ?? '';
  const i = u.indexOf(':');
  const req = {
    name: local ?? ref,
    ref,
    platforms: values.platform,
    plain_http: values['plain-http'],
    username: i >= 0 ? u.slice(0, i) : u,
    password: i >= 0 ? u.slice(i + 1) : '',
    max_concurrent_uploads: Number(values['max-concurrent-uploads']),
  };
  const t0 = Date.now();
  const last = await followProgress('/berth.images.v1.Transfer/Push', req, values.address, values.namespace);
  process.stdout.write(`${last?.name ?? ref}: ${last?.target?.digest ?? ''}\ndone: ${((Date.now() - t0) / 1000).toFixed(2)}s\n`);
}

export async function exportCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...common,
      platform: { type: 'string', multiple: true, default: [] },
      'all-platforms': { type: 'boolean', default: false },
      'skip-manifest-json': { type: 'boolean', default: false },
    },
  });
  const [file, ...names] = positionals;
  if (!file || !names.length) throw new CommandError('please provide both an output filename and an image reference to export');
  const m = method('/berth.images.v1.Transfer/Export');
  const Req = codec(m.requestType);
  const Res = codec<{ data: Buffer }>(m.responseType);
  const { createWriteStream } = await import('node:fs');
  const out = file === '-' ? process.stdout : createWriteStream(file);
  const c = client(values.address);
  try {
    await new Promise<void>((resolve, reject) => {
      const call = c.makeServerStreamRequest(
        m.path,
        (b: Uint8Array) => Buffer.from(b),
        (b: Buffer) => b,
        Req.encode({ names, platforms: values.platform, all_platforms: values['all-platforms'], skip_manifest_json: values['skip-manifest-json'] }),
        md(values.namespace),
      );
      call.on('data', (b: Buffer) => {
        // the file is written at the pace it arrives
        if (!out.write(Res.decode(b).data)) {
          call.pause();
          out.once('drain', () => call.resume());
        }
      });
      call.on('error', (e: grpc.ServiceError) => reject(failed(e)));
      call.on('end', () => resolve());
    });
  } finally {
    c.close();
    if (out !== process.stdout) await new Promise<void>((r) => (out as NodeJS.WritableStream).end(() => r()));
  }
}

export async function importCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...common,
      'base-name': { type: 'string', default: '' },
      'index-name': { type: 'boolean', default: false },
      'no-unpack': { type: 'boolean', default: false },
      snapshotter: { type: 'string', default: '' },
      platform: { type: 'string', multiple: true, default: [] },
      'all-platforms': { type: 'boolean', default: false },
      label: { type: 'string', multiple: true, default: [] },
    },
  });
  const file = positionals[0];
  if (!file) throw new CommandError('please provide the tarball to import (- for stdin)');
  const labels = Object.fromEntries(values.label.map((l) => [l.slice(0, l.indexOf('=') >>> 0), l.slice(l.indexOf('=') + 1)]));
  const m = method('/berth.images.v1.Transfer/Import');
  const Req = codec(m.requestType);
  const Res = codec<PullProgress>(m.responseType);
  const { createReadStream } = await import('node:fs');
  const input = file === '-' ? process.stdin : createReadStream(file, { highWaterMark: 1 << 20 });
  const c = client(values.address);
  const made: string[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const call = c.makeBidiStreamRequest(m.path, (b: Uint8Array) => Buffer.from(b), (b: Buffer) => b, md(values.namespace));
      call.on('data', (b: Buffer) => {
        const p = Res.decode(b);
        if (p.status === 'imported') made.push(`${p.name} ${p.target?.digest ?? ''}`);
      });
      call.on('error', (e: grpc.ServiceError) => {
        input.destroy();
        reject(failed(e));
      });
      call.on('end', () => resolve());
      let first = true;
      const options = {
        base_name: values['base-name'],
        index_name: values['index-name'],
        skip_unpack: values['no-unpack'],
        snapshotter: values.snapshotter,
        platforms: values.platform,
        all_platforms: values['all-platforms'],
        labels,
      };
      input.on('data', (chunk: Buffer | string) => {
        const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
        const msg = first ? { ...options, data } : { data };
        first = false;
        if (!call.write(Req.encode(msg))) {
          input.pause();
          call.once('drain', () => input.resume());
        }
      });
      input.on('end', () => {
        if (first) call.write(Req.encode(options));
        call.end();
      });
      input.on('error', (e: Error) => {
        call.cancel();
        reject(new CommandError(e.message));
      });
    });
  } finally {
    c.close();
  }
  for (const l of made) process.stdout.write(`${l}\n`);
}

interface Image {
  name: string;
  labels: Record<string, string>;
  target: { media_type: string; digest: string; size: number };
  created_at: { seconds: number; nanos: number } | null;
}

export async function imagesCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...common, quiet: { type: 'boolean', short: 'q', default: false } } });
  const c = client(values.address);
  try {
    const { images } = await unary<{ images: Image[] }>(c, '/containerd.services.images.v1.Images/List', { filters: positionals }, values.namespace);
    images.sort((a, b) => (a.name < b.name ? -1 : 1));
    if (values.quiet) {
      for (const i of images) process.stdout.write(`${i.name}\n`);
      return;
    }
    const rows = [['REF', 'TYPE', 'DIGEST', 'CREATED', 'LABELS']];
    for (const i of images) {
      const created = i.created_at ? new Date(Number(i.created_at.seconds) * 1000).toISOString().replace(/\.\d+Z$/, 'Z') : '-';
      const labels = Object.entries(i.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-';
      rows.push([i.name, i.target.media_type, i.target.digest, created, labels]);
    }
    const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => r[col]!.length)));
    for (const r of rows) process.stdout.write(r.map((v, col) => v.padEnd(widths[col]!)).join(' ').trimEnd() + '\n');
  } finally {
    c.close();
  }
}

export async function rmiCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...common, sync: { type: 'boolean', default: false } } });
  if (!positionals.length) throw new CommandError('please provide an image reference to remove');
  const c = client(values.address);
  let failures = 0;
  try {
    for (const name of positionals) {
      try {
        await unary(c, '/containerd.services.images.v1.Images/Delete', { name, sync: values.sync }, values.namespace);
        process.stdout.write(`${name}\n`);
      } catch (e) {
        failures++;
        process.stderr.write(`berth: unable to delete ${name}: ${(e as Error).message}\n`);
      }
    }
  } finally {
    c.close();
  }
  if (failures) throw new CommandError(`unable to delete ${failures} image(s)`);
}
