// Bundles as containerd's runtime v2 lays them out: `<state>/tasks/<namespace>/<id>` holds
// config.json, rootfs/ (the shim mounts the rootfs there), the `address` file the shim writes
// and, for a stock shim, `work` (a link to `<root>/work/<namespace>/<id>`, the runtime's
// persistent folder, where containerd's runc shim keeps criu's work; Berth's shim has no use for
// it, and its two new inodes and their removal were a share of every run). Berth adds
// `berth.json`: what the tasks service needs to find the shim again after a restart.
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { validateIdentifier } from '@berth/identifiers';
import { unmountAll } from '@berth/snapshot';
import type { ShimKind } from './runtimes.js';

export interface BundleInfo {
  namespace: string;
  id: string;
  kind: ShimKind;
  /** the stock shim binary */
  binary: string;
  runtime: string;
}

export class Bundles {
  constructor(
    private readonly state: string,
    private readonly root: string,
  ) {}

  path(ns: string, id: string): string {
    return join(this.state, ns, id);
  }

  private work(ns: string, id: string): string {
    return join(this.root, ns, id);
  }

  /** Makes the bundle; a bundle already there is an error (one task per container). */
  create(info: BundleInfo, spec: Uint8Array): string {
    const { namespace: ns, id } = info;
    try {
      validateIdentifier(id);
    } catch (e) {
      throw (e as import('@berth/errdefs').BerthError).wrap(`invalid task id ${id}`);
    }
    const path = this.path(ns, id);
    mkdirSync(dirname(path), { recursive: true, mode: 0o711 });
    mkdirSync(path, { mode: 0o700 });
    try {
      mkdirSync(join(path, 'rootfs'), { mode: 0o711 });
      if (info.kind === 'stock') {
        const work = this.work(ns, id);
        mkdirSync(dirname(work), { recursive: true, mode: 0o711 });
        rmSync(work, { recursive: true, force: true });
        mkdirSync(work, { mode: 0o711 });
        symlinkSync(work, join(path, 'work'));
      }
      writeFileSync(join(path, 'config.json'), withRoot(spec), { mode: 0o666 });
      writeFileSync(join(path, 'berth.json'), JSON.stringify(info));
    } catch (e) {
      rmSync(path, { recursive: true, force: true });
      throw e;
    }
    return path;
  }

  info(ns: string, id: string): BundleInfo | undefined {
    return this.infoAt(this.path(ns, id));
  }

  /** The info of the bundle at path (a live one's or a leftover's). */
  infoAt(path: string): BundleInfo | undefined {
    try {
      return JSON.parse(readFileSync(join(path, 'berth.json'), 'utf8')) as BundleInfo;
    } catch {
      return undefined;
    }
  }

  exists(ns: string, id: string): boolean {
    return existsSync(this.path(ns, id));
  }

  /**
   * Every bundle on disk, as namespace and id. The stock work folders whose removal a crash
   * interrupted (renamed with a leading dot, see remove) go now; such bundles are `leftovers()`.
   */
  list(): { namespace: string; id: string }[] {
    for (const w of entriesUnder(this.root).hidden) rmSync(w, { recursive: true, force: true });
    return entriesUnder(this.state).live;
  }

  /**
   * Bundles a delete moved out of the way whose files a crash kept (see remove): their `address`
   * may still lead to a shim that was never told to shut down. `discard` each after.
   */
  leftovers(): string[] {
    return entriesUnder(this.state).hidden;
  }

  /** A left-over bundle's files, its rootfs unmounted first (never removed while mounted). */
  async discard(path: string): Promise<void> {
    const rootfs = join(path, 'rootfs');
    if (existsSync(rootfs)) {
      await unmountAll(rootfs);
      rmdirSync(rootfs);
    }
    await rm(path, { recursive: true, force: true });
  }

  /**
   * Unmounts the rootfs (in case the shim could not), then moves the bundle and the work folder
   * out of their places at once: the id can be used again. Their files go after the call has
   * answered (their unlinks were a few ms of the event loop per Delete), the bundle's only once
   * `release` settles: the delete passes its shim's Shutdown, and until that is done the moved
   * bundle's `address` is how a restarted service finds the shim to end it (`leftovers`).
   */
  async remove(ns: string, id: string, release?: Promise<unknown>): Promise<void> {
    const path = this.path(ns, id);
    let work: string | undefined;
    try {
      work = readlinkSync(join(path, 'work'));
    } catch {
      work = undefined;
    }
    const rootfs = join(path, 'rootfs');
    if (existsSync(rootfs)) {
      await unmountAll(rootfs);
      // never recursive: were anything still mounted, its files must not go
      rmdirSync(rootfs);
    }
    const moved = hide(path);
    if (moved) void (release ?? Promise.resolve()).finally(() => rm(moved, { recursive: true, force: true })).catch(() => undefined);
    const movedWork = work && hide(work);
    if (movedWork) void rm(movedWork, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** The `<namespace>/<id>` entries under dir: as namespace and id, and the paths of those with a leading dot. */
function entriesUnder(dir: string): { live: { namespace: string; id: string }[]; hidden: string[] } {
  const live: { namespace: string; id: string }[] = [];
  const hidden: string[] = [];
  for (const ns of readdirOr(dir)) {
    for (const id of readdirOr(join(dir, ns))) {
      if (id.startsWith('.')) hidden.push(join(dir, ns, id));
      else live.push({ namespace: ns, id });
    }
  }
  return { live, hidden };
}

function readdirOr(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Renames path out of the way (at once, atomically), so a half-removed bundle is never taken for a
 * live one and the id can be used again. Returns the new path; undefined when there was nothing.
 */
function hide(path: string): string | undefined {
  // unique: a delete of the same id may still be removing the last one's files
  const hidden = join(dirname(path), `.${path.slice(dirname(path).length + 1)}.${process.hrtime.bigint().toString(36)}`);
  try {
    renameSync(path, hidden);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  return hidden;
}

/** The spec as the client wrote it; a spec without a root gets containerd's `rootfs`. */
function withRoot(spec: Uint8Array): Uint8Array {
  try {
    const s = JSON.parse(Buffer.from(spec).toString('utf8'));
    if (s && typeof s === 'object' && !s.root?.path) {
      s.root = { ...(s.root ?? {}), path: 'rootfs' };
      return Buffer.from(JSON.stringify(s));
    }
  } catch {
    // not JSON: the shim will say so
  }
  return spec;
}
