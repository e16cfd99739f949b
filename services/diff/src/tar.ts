// A streaming tar reader with Go archive/tar's reading rules (what containerd unpacks with):
// ustar, PAX (records kept as bytes: xattr values such as security.capability are binary),
// GNU long names, base-256 numbers, and sparse files (old GNU, PAX 0.0, 0.1 and 1.0). The npm
// readers decode PAX values as UTF-8 text and drop sparse maps, which loses exactly what a layer
// must keep.
import { ByteSource } from './bytes.js';

export const T = {
  reg: '0',
  regA: '\0',
  link: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
  cont: '7',
  paxHeader: 'x',
  paxGlobal: 'g',
  gnuLongName: 'L',
  gnuLongLink: 'K',
  gnuSparse: 'S',
} as const;

export interface SparseEntry {
  offset: number;
  length: number;
}

export interface TarHeader {
  /** one character: T.reg, T.dir, ... (an old-style `\0` regular file is reported as T.reg) */
  typeflag: string;
  name: string;
  linkname: string;
  mode: number;
  uid: number;
  gid: number;
  /** logical size of the file (a sparse file's real size) */
  size: number;
  /** nanoseconds since the epoch; null when the archive has no such time */
  mtime: bigint;
  atime: bigint | null;
  ctime: bigint | null;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** every PAX record of the entry, values as bytes */
  pax: Map<string, Buffer>;
  /** SCHILY.xattr.* records, by attribute name */
  xattrs: Map<string, Buffer>;
  /** the data fragments of a sparse file (the rest is holes); null for a plain file */
  sparse: SparseEntry[] | null;
}

/** A malformed archive: containerd's tar reader words (archive/tar). */
export class TarError extends Error {}
const errHeader = () => new TarError('archive/tar: invalid tar header');
const errUnexpectedEOF = () => new TarError('unexpected EOF');

const BLOCK = 512;
const headerOnly = new Set<string>([T.link, T.symlink, T.char, T.block, T.dir, T.fifo]);
const NS = 1_000_000_000n;

function str(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return (z < 0 ? s : s.subarray(0, z)).toString('utf8');
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** Octal, or base-256 when the top bit of the first byte is set (GNU's large numbers). */
function num(b: Buffer, off: number, len: number): number {
  const f = b.subarray(off, off + len);
  if (f.length > 0 && f[0] & 0x80) {
    const neg = (f[0] & 0x40) !== 0;
    let v = 0n;
    for (let i = 0; i < f.length; i++) {
      let c = i === 0 ? f[i] & 0x7f : f[i];
      if (neg) c ^= 0xff;
      if (i === 0 && neg) c &= 0x7f;
      v = (v << 8n) | BigInt(c);
    }
    if (neg) v = -(v + 1n);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw errHeader();
    return Number(v);
  }
  let s = f.toString('latin1');
  s = s.replace(/^[ \0]+|[ \0]+$/g, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw errHeader();
  const v = parseInt(s, 8);
  if (!Number.isSafeInteger(v)) throw errHeader();
  return v;
}

function checksumOk(b: Buffer): boolean {
  const want = num(b, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return want === unsigned || want === signed;
}

/** A PAX time, `secs[.frac]`, possibly negative, in nanoseconds. */
export function parsePaxTime(s: string): bigint {
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(s);
  if (!m) throw errHeader();
  const secs = BigInt(m[2]);
  const frac = BigInt(((m[3] ?? '') + '000000000').slice(0, 9));
  const t = secs * NS + frac;
  return m[1] ? -t : t;
}

function paxInt(v: Buffer): number {
  const s = v.toString('latin1');
  if (!/^-?\d+$/.test(s)) throw errHeader();
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw errHeader();
  return n;
}

/** PAX records `%d %s=%s\n`; lengths count bytes. GNU 0.0 sparse offset/numbytes pairs gather in `GNU.sparse.map`. */
function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const sparse: string[] = [];
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) break; // NUL padding after the last record
    const sp = data.indexOf(0x20, at);
    if (sp < 0) throw errHeader();
    const len = Number(data.subarray(at, sp).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= sp - at || at + len > data.length || data[at + len - 1] !== 0x0a) throw errHeader();
    const rec = data.subarray(sp + 1, at + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 1) throw errHeader();
    const key = rec.subarray(0, eq).toString('utf8');
    const value = Buffer.from(rec.subarray(eq + 1));
    if (key === 'GNU.sparse.offset' || key === 'GNU.sparse.numbytes') {
      if ((key === 'GNU.sparse.offset') !== (sparse.length % 2 === 0)) throw errHeader();
      sparse.push(value.toString('latin1'));
    } else out.set(key, value);
    at += len;
  }
  if (sparse.length > 0) out.set('GNU.sparse.map', Buffer.from(sparse.join(',')));
  return out;
}

function validSparse(map: SparseEntry[], size: number): boolean {
  let end = 0;
  for (const e of map) {
    if (e.offset < 0 || e.length < 0 || e.offset < end || e.offset + e.length > size) return false;
    end = e.offset + e.length;
  }
  return true;
}

/**
 * Reads entries one at a time: `next()` gives the next header (skipping what was left of the
 * previous entry's data), `data()` the current entry's bytes with their offsets in the file.
 */
export class TarReader {
  private readonly src: ByteSource;
  /** data bytes of the current entry still unread, and their block padding */
  private left = 0;
  private pad = 0;
  private current: TarHeader | null = null;
  private oneZeroBlock = false;

  constructor(src: AsyncIterable<Buffer | Uint8Array> | ByteSource) {
    this.src = src instanceof ByteSource ? src : new ByteSource(src);
  }

  /** The rest of the stream, read to the end (its bytes count for the layer's digest). */
  async drain(): Promise<void> {
    await this.src.drain();
  }

  private async block(): Promise<Buffer | null> {
    const b = await this.src.read(BLOCK);
    if (b.length === 0) return null;
    if (b.length < BLOCK) throw errUnexpectedEOF();
    return b;
  }

  private async readData(n: number): Promise<Buffer> {
    const b = await this.src.read(n);
    if (b.length < n) throw errUnexpectedEOF();
    const pad = (BLOCK - (n % BLOCK)) % BLOCK;
    if ((await this.src.skip(pad)) < pad) throw errUnexpectedEOF();
    return b;
  }

  private async skipRest(): Promise<void> {
    const n = this.left + this.pad;
    this.left = this.pad = 0;
    if ((await this.src.skip(n)) < n) throw errUnexpectedEOF();
  }

  /** The next entry, or null at the end of the archive. */
  async next(): Promise<TarHeader | null> {
    await this.skipRest();
    this.current = null;
    let pax: Map<string, Buffer> | null = null;
    let longName: string | null = null;
    let longLink: string | null = null;
    for (;;) {
      const b = await this.block();
      if (b === null) return null;
      if (isZero(b)) {
        // Go: two zero blocks end the archive; one followed by anything else is an error
        const b2 = await this.block();
        if (b2 === null || isZero(b2)) return null;
        throw errHeader();
      }
      if (!checksumOk(b)) throw errHeader();
      const magic = b.subarray(257, 263).toString('latin1');
      const version = b.subarray(263, 265).toString('latin1');
      const ustar = magic === 'ustar\0' && version === '00';
      const star = ustar && b.subarray(508, 512).toString('latin1') === 'tar\0';
      const gnu = magic === 'ustar ' && version === ' \0';
      let typeflag = String.fromCharCode(b[156]);
      const size = num(b, 124, 12);
      if (size < 0) throw errHeader();

      if (typeflag === T.paxHeader || typeflag === T.paxGlobal) {
        const recs = parsePax(await this.readData(size));
        if (typeflag === T.paxGlobal) {
          // returned as an entry of its own, as Go does; the applier ignores it
          return (this.current = { ...this.base(b, gnu, ustar, star), typeflag, pax: recs, size: 0 });
        }
        pax = recs;
        continue;
      }
      if (typeflag === T.gnuLongName || typeflag === T.gnuLongLink) {
        const d = await this.readData(size);
        const z = d.indexOf(0);
        const s = (z < 0 ? d : d.subarray(0, z)).toString('utf8');
        if (typeflag === T.gnuLongName) longName = s;
        else longLink = s;
        continue;
      }

      const h = this.base(b, gnu, ustar, star);
      if (pax) this.mergePax(h, pax);
      if (longName !== null) h.name = longName;
      if (longLink !== null) h.linkname = longLink;
      if (typeflag === T.regA) typeflag = h.name.endsWith('/') ? T.dir : T.reg;
      h.typeflag = typeflag;
      // header-only types carry no data whatever their size field says
      const dataSize = headerOnly.has(typeflag) ? 0 : h.size;
      this.left = dataSize;
      this.pad = (BLOCK - (dataSize % BLOCK)) % BLOCK;

      if (typeflag === T.gnuSparse) await this.oldGnuSparse(h, b);
      else if (pax) await this.paxSparse(h, pax);
      if (h.sparse && !validSparse(h.sparse, h.size)) throw errHeader();
      return (this.current = h);
    }
  }

  private base(b: Buffer, gnu: boolean, ustar: boolean, star: boolean): TarHeader {
    let name = str(b, 0, 100);
    let atime: bigint | null = null;
    let ctime: bigint | null = null;
    if (ustar) {
      const prefix = str(b, 345, star ? 131 : 155);
      if (prefix) name = `${prefix}/${name}`;
      if (star) {
        if (b[476]) atime = BigInt(num(b, 476, 12)) * NS;
        if (b[488]) ctime = BigInt(num(b, 488, 12)) * NS;
      }
    } else if (gnu) {
      if (b[345]) atime = BigInt(num(b, 345, 12)) * NS;
      if (b[357]) ctime = BigInt(num(b, 357, 12)) * NS;
    }
    return {
      typeflag: String.fromCharCode(b[156]),
      name,
      linkname: str(b, 157, 100),
      mode: num(b, 100, 8),
      uid: num(b, 108, 8),
      gid: num(b, 116, 8),
      size: num(b, 124, 12),
      mtime: BigInt(num(b, 136, 12)) * NS,
      atime,
      ctime,
      uname: ustar || gnu ? str(b, 265, 32) : '',
      gname: ustar || gnu ? str(b, 297, 32) : '',
      devmajor: ustar || gnu ? num(b, 329, 8) : 0,
      devminor: ustar || gnu ? num(b, 337, 8) : 0,
      pax: new Map(),
      xattrs: new Map(),
      sparse: null,
    };
  }

  private mergePax(h: TarHeader, pax: Map<string, Buffer>): void {
    h.pax = pax;
    for (const [k, v] of pax) {
      const s = () => v.toString('utf8');
      switch (k) {
        case 'path':
          h.name = s();
          break;
        case 'linkpath':
          h.linkname = s();
          break;
        case 'uname':
          h.uname = s();
          break;
        case 'gname':
          h.gname = s();
          break;
        case 'uid':
          h.uid = paxInt(v);
          break;
        case 'gid':
          h.gid = paxInt(v);
          break;
        case 'size':
          h.size = paxInt(v);
          if (h.size < 0) throw errHeader();
          break;
        case 'mtime':
          h.mtime = parsePaxTime(s());
          break;
        case 'atime':
          h.atime = parsePaxTime(s());
          break;
        case 'ctime':
          h.ctime = parsePaxTime(s());
          break;
        default:
          if (k.startsWith('SCHILY.xattr.')) h.xattrs.set(k.slice('SCHILY.xattr.'.length), v);
      }
    }
  }

  private async oldGnuSparse(h: TarHeader, b: Buffer): Promise<void> {
    const map: SparseEntry[] = [];
    const entries = (blk: Buffer, off: number, n: number) => {
      for (let i = 0; i < n; i++) {
        const at = off + i * 24;
        if (blk[at] === 0) break;
        map.push({ offset: num(blk, at, 12), length: num(blk, at + 12, 12) });
      }
    };
    entries(b, 386, 4);
    let extended = b[482] !== 0;
    while (extended) {
      const x = await this.block();
      if (x === null) throw errUnexpectedEOF();
      entries(x, 0, 21);
      extended = x[504] !== 0;
    }
    h.size = num(b, 483, 12);
    h.typeflag = T.reg;
    h.sparse = map;
  }

  private async paxSparse(h: TarHeader, pax: Map<string, Buffer>): Promise<void> {
    const major = pax.get('GNU.sparse.major')?.toString('latin1');
    const minor = pax.get('GNU.sparse.minor')?.toString('latin1');
    const name = pax.get('GNU.sparse.name');
    let real = pax.get('GNU.sparse.size') ?? pax.get('GNU.sparse.realsize');
    if (major === '1' && minor === '0') {
      real = pax.get('GNU.sparse.realsize') ?? real;
      if (name) h.name = name.toString('utf8');
      if (real) h.size = paxInt(real);
      h.sparse = await this.sparseMapInData();
      return;
    }
    const map = pax.get('GNU.sparse.map');
    if (major === undefined && map === undefined) return;
    if (name) h.name = name.toString('utf8');
    if (real) h.size = paxInt(real);
    const nums = map && map.length ? map.toString('latin1').split(',').map((x) => paxInt(Buffer.from(x))) : [];
    if (nums.length % 2) throw errHeader();
    h.sparse = [];
    for (let i = 0; i < nums.length; i += 2) h.sparse.push({ offset: nums[i], length: nums[i + 1] });
  }

  /** PAX 1.0: the map heads the data, decimal numbers each ended by a newline, padded to a block. */
  private async sparseMapInData(): Promise<SparseEntry[]> {
    let text = '';
    const numbers: number[] = [];
    let want = -1;
    while (want < 0 || numbers.length < 1 + 2 * want) {
      if (this.left < BLOCK) throw errHeader();
      const b = await this.src.read(BLOCK);
      if (b.length < BLOCK) throw errUnexpectedEOF();
      this.left -= BLOCK;
      text += b.toString('latin1');
      let nl: number;
      while ((want < 0 || numbers.length < 1 + 2 * want) && (nl = text.indexOf('\n')) >= 0) {
        numbers.push(paxInt(Buffer.from(text.slice(0, nl))));
        text = text.slice(nl + 1);
        if (numbers.length === 1) want = numbers[0];
        if (want < 0 || want > 1 << 20) throw errHeader();
      }
    }
    const map: SparseEntry[] = [];
    for (let i = 1; i < numbers.length; i += 2) map.push({ offset: numbers[i], length: numbers[i + 1] });
    return map;
  }

  /**
   * The current entry's data as pieces with their offset in the file (a sparse file's pieces
   * skip its holes). Each piece is valid until the next one is asked for.
   */
  async *data(max = 1 << 20): AsyncGenerator<{ offset: number; chunk: Buffer }> {
    const h = this.current;
    if (!h) return;
    const frags = h.sparse ?? [{ offset: 0, length: this.left }];
    for (const f of frags) {
      let off = f.offset;
      let n = f.length;
      if (n > this.left) throw errUnexpectedEOF();
      while (n > 0) {
        const c = await this.src.some(Math.min(n, max));
        if (c.length === 0) throw errUnexpectedEOF();
        this.left -= c.length;
        n -= c.length;
        yield { offset: off, chunk: c };
        off += c.length;
      }
    }
  }
}
