// `berth pull`: Berth's server-side pull (berth.images.v1.Transfer/Pull) with ctr's flags and
// environment (CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE), a live bar per layer (bytes, speed,
// ETA) on a terminal and plain lines as layers change state elsewhere. Its own module, on plain
// HTTP/2 rather than grpc-js: a pull's figure includes the command's start.
import { parseArgs } from 'node:util';
import type cliProgressType from 'cli-progress';
import { codec, method } from '@berth/api';
import { CommandError, common, credentials } from './flags.js';
import { GrpcStatusError, serverStream } from './h2.js';

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

export interface PullProgress {
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
  // the bar library loads only for a terminal: the CLI's start is part of every pull's time
  const view = out.isTTY ? new Bars((await import('cli-progress')).default) : new Lines(out);
  let last: PullProgress | undefined;
  const call = serverStream(address, m.path, Req.encode(req), { 'containerd-namespace': namespace }, (b) => {
    const p = Res.decode(b);
    if (p.layers.length) view.update(p);
    last = { ...p, layers: p.layers.length ? p.layers : (last?.layers ?? []) };
  });
  const cancel = () => call.cancel();
  process.once('SIGINT', cancel);
  try {
    await call.done;
  } catch (e) {
    throw new CommandError(e instanceof GrpcStatusError ? e.message : `failed to dial "${address}": ${(e as Error).message}`);
  } finally {
    process.off('SIGINT', cancel);
    view.stop();
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
  const labels = Object.fromEntries(values.label.map((l) => [l.slice(0, l.indexOf('=') >>> 0), l.slice(l.indexOf('=') + 1)]));
  const req = {
    ref,
    platforms: values.platform,
    all_platforms: values['all-platforms'],
    plain_http: values['plain-http'],
    snapshotter: values.snapshotter,
    skip_unpack: values['skip-unpack'],
    labels,
    ...credentials(values.user),
    max_concurrent_downloads: Number(values['max-concurrent-downloads']),
  };
  const t0 = Date.now();
  const last = await followProgress('/berth.images.v1.Transfer/Pull', req, values.address, values.namespace);
  const total = last?.layers.reduce((n, l) => n + l.total, 0) ?? 0;
  process.stdout.write(`${last?.name ?? ref}: ${last?.target?.digest ?? ''}\ndone: ${((Date.now() - t0) / 1000).toFixed(2)}s (${human(total)})\n`);
}

