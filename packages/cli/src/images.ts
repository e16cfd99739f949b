// `berth push`, `export`, `import`, `images`, `rmi`: images through the gateway's socket, with
// ctr's flags and environment (CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE); push, export and import
// through Berth's berth.images.v1.Transfer. `berth pull` is pull.ts.
import * as grpc from '@grpc/grpc-js';
import { parseArgs } from 'node:util';
import type cliProgressType from 'cli-progress';
import { codec, method } from '@berth/api';
import { credentials } from './flags.js';
import { client, common, CommandError, failed, md, unary } from './grpc.js';
import { followProgress, type PullProgress } from './pull.js';

export { followProgress, human, type PullProgress } from './pull.js';

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
  const req = {
    name: local ?? ref,
    ref,
    platforms: values.platform,
    plain_http: values['plain-http'],
    ...credentials(values.user),
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
