// Test fixtures: a content library over a temporary root, and a driver for the Write stream.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '@berth/store';
import { eventRecorder } from '@berth/bus';
import type { WriteContentRequest__Output as WriteReq } from '@berth/api/types/containerd/services/content/v1/WriteContentRequest.js';
import type { WriteContentResponse__Output as WriteRes } from '@berth/api/types/containerd/services/content/v1/WriteContentResponse.js';
import { ContentApi } from './api.js';
import { BlobStore } from './blobs.js';
import { Content, type ContentOptions, type Ctx } from './local.js';
import { ContentStore } from './store.js';

export interface Fixture {
  dir: string;
  blobs: BlobStore;
  db: Store;
  content: Content;
  api: ContentApi;
  events: [string, string, Record<string, unknown>][];
  /** closes the database and opens everything again on the same folder, like a restart */
  restart(): Promise<void>;
  done(): Promise<void>;
}

export async function fixture(opts: ContentOptions = {}): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-content-'));
  const rec = eventRecorder();
  const f = { dir, events: rec.events } as Fixture;
  const open = async () => {
    f.blobs = await BlobStore.open(dir);
    f.db = await openStore(join(dir, 'meta'));
    f.content = new Content(f.blobs, new ContentStore(f.db), rec, opts);
    f.api = new ContentApi(f.content);
  };
  await open();
  f.restart = async () => {
    await f.db.close();
    await open();
  };
  f.done = async () => {
    await f.db.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return f;
}

export type Req = Partial<WriteReq>;

/** A full request with containerd's defaults for what `r` leaves out. */
export function req(r: Req): WriteReq {
  return { action: 'STAT', ref: '', total: 0, expected: '', offset: 0, data: Buffer.alloc(0), labels: {}, ...r } as WriteReq;
}

/** Runs one Write stream with these requests; the answers, and the error it ended with. */
export async function writeStream(api: ContentApi, ctx: Ctx, reqs: (Req | Error)[]): Promise<{ res: Partial<WriteRes>[]; err?: Error }> {
  const res: Partial<WriteRes>[] = [];
  async function* gen() {
    for (const r of reqs) {
      if (r instanceof Error) throw r;
      yield req(r);
    }
  }
  try {
    await api.write({ ...ctx }, gen(), async (m) => void res.push(m));
    return { res };
  } catch (err) {
    return { res, err: err as Error };
  }
}

/**
 * An interactive Write stream: send one request, get its answer; `end()` half-closes. Lets a
 * test hold a writer open while it does other things.
 */
export function openWrite(api: ContentApi, ctx: Ctx) {
  const inbox: WriteReq[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  const answers: Partial<WriteRes>[] = [];
  let answered: (() => void) | undefined;
  async function* requests() {
    for (;;) {
      while (inbox.length) yield inbox.shift()!;
      if (ended) return;
      await new Promise<void>((r) => (wake = r));
    }
  }
  const done = api.write(ctx, requests(), async (m) => {
    answers.push(m);
    answered?.();
  });
  done.catch(() => undefined);
  const failed = done.then(
    () => undefined,
    (e: Error) => e,
  );
  return {
    done,
    async send(r: Req): Promise<Partial<WriteRes>> {
      const before = answers.length;
      inbox.push(req(r));
      wake?.();
      while (answers.length === before) {
        const res = await Promise.race([new Promise<'answer'>((ok) => (answered = () => ok('answer'))), failed]);
        if (res instanceof Error) throw res;
        if (res === undefined && answers.length === before) throw new Error('stream ended');
      }
      return answers[before]!;
    },
    end() {
      ended = true;
      wake?.();
    },
  };
}

export const bytes = (n: number, seed = 1) => {
  const b = Buffer.allocUnsafe(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
};
