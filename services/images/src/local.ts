// Image records as containerd 1.6 keeps them (metadata/images.go, services/images/local.go):
// per namespace, by name; a target descriptor, labels, timestamps; updates by field path; the
// /images/* events. Pulling and unpacking are the client's work in containerd 1.6 (ctr does
// them through content, snapshots, diff and leases), so this is the whole Images API.
import { alreadyExists, BerthError, Code, invalidArgument, notFound, toBerthError } from '@berth/errdefs';
import { parseAll } from '@berth/filters';
import { digestProblem, validateLabel } from '@berth/identifiers';
import { key, prefix, unescapePart, type Store } from '@berth/store';
import type { EventSink, GcRecords, NamespaceGuard } from '@berth/bus';
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
  constructor(
    private readonly db: Store,
    private readonly events: EventSink,
    private readonly now: () => Timestamp,
    /** namespaces exist while images are written in them (see @berth/bus usage.ts) */
    private readonly guard?: NamespaceGuard,
  ) {}

  private key(ns: string, name: string): string {
    return key('image', ns, name);
  }

  async get(ns: string, name: string): Promise<Image> {
    const img = await this.db.get<Image>(this.key(ns, name));
    if (!img) throw notFound(`image "${name}"`);
    return img;
  }

  async list(ns: string, filters: string[]): Promise<Image[]> {
    const f = parseAll(filters);
    const out: Image[] = [];
    for await (const [, img] of this.db.entries<Image>(prefix('image', ns))) {
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
    const img = normalize(image);
    validateImage(img);
    const write = () =>
      this.db.transact([this.key(ns, img.name)], async (tx) => {
        if (await tx.get(this.key(ns, img.name))) throw alreadyExists(`image "${img.name}"`);
        const now = this.now();
        img.created_at = now;
        img.updated_at = now;
        tx.put(this.key(ns, img.name), img);
        this.events.emit(tx, ns, '/images/create', { name: img.name, labels: img.labels });
        return img;
      });
    return this.guard ? this.guard.write(ns, write) : write();
  }

  async update(ns: string, image: Image, paths: string[]): Promise<Image> {
    if (!image?.name) throw new BerthError(Code.InvalidArgument, 'Image.Name required');
    return this.db.transact([this.key(ns, image.name)], async (tx) => {
      const cur = await tx.get<Image>(this.key(ns, image.name));
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
      tx.put(this.key(ns, next.name), next);
      this.events.emit(tx, ns, '/images/update', { name: next.name, labels: next.labels });
      return next;
    });
  }

  async delete(ns: string, name: string): Promise<void> {
    await this.db.transact([this.key(ns, name)], async (tx) => {
      if (!(await tx.get(this.key(ns, name)))) throw notFound(`image "${name}"`);
      tx.del(this.key(ns, name));
      this.events.emit(tx, ns, '/images/delete', { name });
    });
  }

  hasAny(ns: string): Promise<boolean> {
    return this.db.hasPrefix(prefix('image', ns));
  }

  /** Every namespace's images as the collector reads them: roots, with their target and labels. */
  async gcRecords(): Promise<GcRecords> {
    const images: NonNullable<GcRecords['images']> = [];
    const from = prefix('image');
    for await (const [k, img] of this.db.entries<Image>(from)) {
      images.push({ ns: unescapePart(k.slice(from.length).split('/')[0]!), name: img.name, target: img.target?.digest ?? '', labels: img.labels ?? {} });
    }
    return { images };
  }
}
