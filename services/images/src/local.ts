// Image records as containerd 1.6 keeps them (metadata/images.go, services/images/local.go):
// per namespace, by name; a target descriptor, labels, timestamps; updates by field path; the
// /images/* events. Pulling and unpacking are the client's work in containerd 1.6 (ctr does
// them through content, snapshots, diff and leases), so this is the whole Images API.
import { alreadyExists, BerthError, Code, invalidArgument, notFound, toBerthError } from '@berth/errdefs';
import { parseAll } from '@berth/filters';
import { digestProblem, validateLabel } from '@berth/identifiers';
import type { Store } from '@berth/store';
import type { Timestamp } from '@berth/api';

export interface Descriptor {
  media_type: string;
  digest: string;
  size: number;
  annotations: Record<string, string>;
}

export interface Image {
  name: string;
  labels: Record<string, string>;
  target: Descriptor;
  created_at: Timestamp | null;
  updated_at: Timestamp | null;
}

export type Publish = (namespace: string, topic: '/images/create' | '/images/update' | '/images/delete', event: Record<string, unknown>) => Promise<unknown>;

function validateImage(img: Image): void {
  if (!img.name) throw invalidArgument('image name must not be empty');
  for (const [k, v] of Object.entries(img.labels ?? {})) {
    try {
      validateLabel(k, v);
    } catch (e) {
      throw toBerthError(e).wrap('image.Labels');
    }
  }
  const t = img.target;
  const bad = digestProblem(t?.digest ?? '');
  if (bad) throw invalidArgument(`Target.Digest "${t?.digest ?? ''}" invalid: ${bad}`);
  if (!(t.size > 0)) throw invalidArgument('Target.Size must be greater than zero');
  if (!t.media_type) throw invalidArgument('Target.MediaType must be set');
}

const dropEmpty = (m: Record<string, string> | undefined) => Object.fromEntries(Object.entries(m ?? {}).filter(([, v]) => v !== ''));

function normalize(img: Image): Image {
  // containerd's target is not nullable: a request without one carries the empty descriptor,
  // which validateImage then refuses in containerd's words
  const t = img.target ?? { media_type: '', digest: '', size: 0, annotations: {} };
  return {
    name: img.name,
    labels: dropEmpty(img.labels),
    target: { media_type: t.media_type, digest: t.digest, size: Number(t.size), annotations: dropEmpty(t.annotations) },
    created_at: img.created_at,
    updated_at: img.updated_at,
  };
}

function mapField(m: Record<string, string>, rest: string[]): string | undefined {
  return rest.length ? m[rest.join('.')] : undefined;
}

export class Images {
  private lock: Promise<unknown> = Promise.resolve();

  constructor(private readonly db: Store, private readonly publish: Publish, private readonly now: () => Timestamp) {}

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  private key(ns: string, name: string): string {
    return `${ns}/image/${name}`;
  }

  async get(ns: string, name: string): Promise<Image> {
    const img = await this.db.get<Image>(this.key(ns, name));
    if (!img) throw notFound(`image "${name}"`);
    return img;
  }

  async list(ns: string, filters: string[]): Promise<Image[]> {
    const f = parseAll(filters);
    const out: Image[] = [];
    for await (const [, img] of this.db.entries<Image>(`${ns}/image/`)) {
      const match = f.match({
        field: ([head, ...rest]) => {
          switch (head) {
            case 'name':
              return rest.length ? undefined : img.name || undefined;
            case 'target':
              return rest.length === 1 ? (rest[0] === 'digest' ? img.target.digest : rest[0] === 'mediatype' ? img.target.media_type : undefined) : undefined;
            case 'labels':
              return mapField(img.labels, rest);
            case 'annotations':
              return mapField(img.target.annotations, rest);
            default:
              return undefined;
          }
        },
      });
      if (match) out.push(img);
    }
    return out;
  }

  async create(ns: string, image: Image): Promise<Image> {
    if (!image?.name) throw new BerthError(Code.InvalidArgument, 'Image.Name required');
    const created = await this.serial(async () => {
      const img = normalize(image);
      validateImage(img);
      if (await this.db.get(this.key(ns, img.name))) throw alreadyExists(`image "${img.name}"`);
      const now = this.now();
      img.created_at = now;
      img.updated_at = now;
      await this.db.put(this.key(ns, img.name), img);
      return img;
    });
    await this.publish(ns, '/images/create', { name: created.name, labels: created.labels });
    return created;
  }

  async update(ns: string, image: Image, paths: string[]): Promise<Image> {
    if (!image?.name) throw new BerthError(Code.InvalidArgument, 'Image.Name required');
    const updated = await this.serial(async () => {
      const cur = await this.db.get<Image>(this.key(ns, image.name));
      if (!cur) throw notFound(`image "${image.name}"`);
      let next: Image;
      if (paths.length) {
        next = structuredClone(cur);
        for (const p of paths) {
          if (p.startsWith('labels.')) {
            const k = p.slice(7);
            next.labels[k] = image.labels?.[k] ?? '';
          } else if (p.startsWith('annotations.')) {
            const k = p.slice(12);
            next.target.annotations[k] = image.target?.annotations?.[k] ?? '';
          } else if (p === 'labels') next.labels = image.labels ?? {};
          else if (p === 'target') next.target = image.target;
          else if (p === 'annotations') next.target.annotations = image.target?.annotations ?? {};
          else throw invalidArgument(`cannot update "${p}" field on image "${image.name}"`);
        }
      } else {
        next = { ...image };
      }
      next = normalize({ ...next, name: image.name });
      validateImage(next);
      next.created_at = cur.created_at;
      next.updated_at = this.now();
      await this.db.put(this.key(ns, next.name), next);
      return next;
    });
    await this.publish(ns, '/images/update', { name: updated.name, labels: updated.labels });
    return updated;
  }

  async delete(ns: string, name: string): Promise<void> {
    await this.serial(async () => {
      if (!(await this.db.get(this.key(ns, name)))) throw notFound(`image "${name}"`);
      await this.db.del(this.key(ns, name));
    });
    await this.publish(ns, '/images/delete', { name });
  }

  hasAny(ns: string): Promise<boolean> {
    return this.db.hasPrefix(`${ns}/image/`);
  }
}
