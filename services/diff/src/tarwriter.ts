// Tar headers as Go's writer makes them for containerd's diffs: ustar where it can hold the
// entry, a PAX extended header before it where not (long or non-ASCII names, large numbers,
// nanosecond times, xattrs). Also writes the forms a layer in the wild may use (GNU long names,
// base-256 numbers, PAX 1.0 sparse maps), so tests can build any archive.
export interface TarEntry {
  name: string;
  /** T.reg, T.dir, ...; default regular file */
  typeflag?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** data size (a sparse file's stored bytes are given by `sparse`) */
  size?: number;
  /** nanoseconds since the epoch */
  mtime?: bigint;
  atime?: bigint;
  linkname?: string;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Map<string, Buffer> | Record<string, string | Buffer>;
  /** more PAX records, written as given */
  pax?: Record<string, string | Buffer>;
  /** GNU long name/link headers instead of PAX ones for long names */
  gnuLongNames?: boolean;
  /** base-256 numbers instead of PAX records for numbers too large for octal */
  base256?: boolean;
}

const BLOCK = 512;
const NS = 1_000_000_000n;

function octal(b: Buffer, off: number, len: number, v: number, base256: boolean): boolean {
  if (v >= 0 && v < 8 ** (len - 1)) {
    b.write(v.toString(8).padStart(len - 1, '0') + '\0', off, len, 'latin1');
    return true;
  }
  if (!base256) return false;
  let x = BigInt(v);
  for (let i = len - 1; i > 0; i--) {
    b[off + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  b[off] = 0x80;
  return true;
}

function put(b: Buffer, off: number, len: number, s: string): boolean {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length > len) return false;
  bytes.copy(b, off);
  return true;
}

const ascii = (s: string) => /^[\x00-\x7f]*$/.test(s);

function splitUstar(name: string): [string, string] | null {
  if (Buffer.byteLength(name) <= 100) return ['', name];
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== '/') continue;
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100 && rest !== '') return [prefix, rest];
  }
  return null;
}

function paxRecord(k: string, v: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${k}=`), v, Buffer.from('\n')]);
  let n = body.length + 1;
  while (String(n).length + body.length !== n) n = String(n).length + body.length;
  return Buffer.concat([Buffer.from(String(n)), body]);
}

function paxTime(t: bigint): string {
  const neg = t < 0n;
  const a = neg ? -t : t;
  const secs = a / NS;
  const frac = (a % NS).toString().padStart(9, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${secs}${frac ? '.' + frac : ''}`;
}

function rawHeader(e: {
  name: string;
  prefix?: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSecs: number;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  base256: boolean;
}): Buffer {
  const b = Buffer.alloc(BLOCK);
  put(b, 0, 100, e.name);
  octal(b, 100, 8, e.mode, false);
  octal(b, 108, 8, e.uid, e.base256);
  octal(b, 116, 8, e.gid, e.base256);
  octal(b, 124, 12, e.size, e.base256);
  octal(b, 136, 12, e.mtimeSecs, e.base256);
  b.write(e.typeflag, 156, 1, 'latin1');
  put(b, 157, 100, e.linkname);
  b.write('ustar\x0000', 257, 8, 'latin1');
  put(b, 265, 32, e.uname);
  put(b, 297, 32, e.gname);
  octal(b, 329, 8, e.devmajor, false);
  octal(b, 337, 8, e.devminor, false);
  if (e.prefix) put(b, 345, 155, e.prefix);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return b;
}

function withData(hdr: Buffer, data: Buffer): Buffer[] {
  return [hdr, data, Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK)];
}

/** The header blocks of one entry (PAX or GNU long-name headers first when needed). */
export function tarHeader(e: TarEntry): Buffer {
  const typeflag = e.typeflag ?? '0';
  const size = e.size ?? 0;
  const mtime = e.mtime ?? 0n;
  const mtimeSecs = Number(mtime >= 0n ? mtime / NS : (mtime - NS + 1n) / NS);
  const base256 = e.base256 ?? false;
  const records: [string, Buffer][] = [];
  const out: Buffer[] = [];
  let name = e.name;
  let prefix = '';
  let linkname = e.linkname ?? '';

  const split = ascii(name) ? splitUstar(name) : null;
  if (split) [prefix, name] = split;
  else if (e.gnuLongNames) {
    out.push(...withData(rawHeader({ name: '././@LongLink', typeflag: 'L', mode: 0, uid: 0, gid: 0, size: Buffer.byteLength(e.name) + 1, mtimeSecs: 0, linkname: '', uname: '', gname: '', devmajor: 0, devminor: 0, base256 }), Buffer.from(e.name + '\0')));
    name = e.name.slice(0, 100);
  } else {
    records.push(['path', Buffer.from(e.name)]);
    name = '';
  }
  if (Buffer.byteLength(linkname) > 100 || !ascii(linkname)) {
    if (e.gnuLongNames) {
      out.push(...withData(rawHeader({ name: '././@LongLink', typeflag: 'K', mode: 0, uid: 0, gid: 0, size: Buffer.byteLength(linkname) + 1, mtimeSecs: 0, linkname: '', uname: '', gname: '', devmajor: 0, devminor: 0, base256 }), Buffer.from(linkname + '\0')));
    } else records.push(['linkpath', Buffer.from(linkname)]);
    linkname = '';
  }
  const numeric = (k: string, v: number, len: number): number => {
    if (v >= 0 && v < 8 ** (len - 1)) return v;
    if (base256) return v;
    records.push([k, Buffer.from(String(v))]);
    return 0;
  };
  const uid = numeric('uid', e.uid ?? 0, 8);
  const gid = numeric('gid', e.gid ?? 0, 8);
  const hsize = numeric('size', size, 12);
  let hmtime = mtimeSecs;
  if (mtime % NS !== 0n || mtimeSecs < 0 || mtimeSecs >= 8 ** 11) {
    records.push(['mtime', Buffer.from(paxTime(mtime))]);
    if (mtimeSecs < 0 || mtimeSecs >= 8 ** 11) hmtime = 0;
  }
  if (e.atime !== undefined) records.push(['atime', Buffer.from(paxTime(e.atime))]);
  const xattrs = e.xattrs instanceof Map ? e.xattrs : new Map(Object.entries(e.xattrs ?? {}));
  for (const [k, v] of xattrs) records.push([`SCHILY.xattr.${k}`, Buffer.isBuffer(v) ? v : Buffer.from(v)]);
  for (const [k, v] of Object.entries(e.pax ?? {})) records.push([k, Buffer.isBuffer(v) ? v : Buffer.from(v)]);

  if (records.length) {
    records.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const data = Buffer.concat(records.map(([k, v]) => paxRecord(k, v)));
    const pname = `PaxHeaders.0/${(prefix ? prefix + '/' : '') + (name || e.name)}`.slice(0, 100);
    out.push(...withData(rawHeader({ name: pname, typeflag: 'x', mode: 0, uid: 0, gid: 0, size: data.length, mtimeSecs: 0, linkname: '', uname: '', gname: '', devmajor: 0, devminor: 0, base256: false }), data));
  }
  out.push(
    rawHeader({
      name,
      prefix,
      typeflag,
      mode: e.mode ?? (typeflag === '5' ? 0o755 : 0o644),
      uid,
      gid,
      size: hsize,
      mtimeSecs: hmtime,
      linkname,
      uname: e.uname ?? '',
      gname: e.gname ?? '',
      devmajor: e.devmajor ?? 0,
      devminor: e.devminor ?? 0,
      base256,
    }),
  );
  return Buffer.concat(out);
}

/** Zeros that end `size` bytes of data on a block boundary. */
export function tarPadding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The two zero blocks that end an archive. */
export function tarEnd(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}

/** A whole regular entry with its data. */
export function tarFile(e: TarEntry, data: Buffer): Buffer {
  return Buffer.concat([tarHeader({ ...e, size: data.length }), data, tarPadding(data.length)]);
}

/**
 * A sparse file in GNU's PAX 1.0 form: `realSize` bytes of which only `fragments` hold data
 * (the rest are holes), so a test can write an 8 GiB file with a few bytes.
 */
export function tarSparseFile(e: TarEntry, realSize: number, fragments: { offset: number; data: Buffer }[]): Buffer {
  const map = Buffer.from(`${fragments.length}\n${fragments.map((f) => `${f.offset}\n${f.data.length}\n`).join('')}`);
  const mapBlock = Buffer.concat([map, tarPadding(map.length)]);
  const stored = Buffer.concat(fragments.map((f) => f.data));
  const slash = e.name.lastIndexOf('/');
  const hdr = tarHeader({
    ...e,
    name: `${e.name.slice(0, slash + 1)}GNUSparseFile.0/${e.name.slice(slash + 1)}`,
    size: mapBlock.length + stored.length,
    pax: { ...e.pax, 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0', 'GNU.sparse.name': e.name, 'GNU.sparse.realsize': String(realSize) },
  });
  return Buffer.concat([hdr, mapBlock, stored, tarPadding(stored.length)]);
}
