// Exact-size reads over a stream of chunks, without copying a chunk that is passed through whole.
export class ByteSource {
  private chunk: Buffer = Buffer.alloc(0);
  private at = 0;
  private done = false;
  private readonly it: AsyncIterator<Buffer | Uint8Array>;

  constructor(src: AsyncIterable<Buffer | Uint8Array>) {
    this.it = src[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    while (this.at >= this.chunk.length) {
      if (this.done) return false;
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      const v = r.value;
      this.chunk = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      this.at = 0;
    }
    return true;
  }

  /** Exactly `n` bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    if (!(await this.fill())) return Buffer.alloc(0);
    if (this.chunk.length - this.at >= n) {
      const b = this.chunk.subarray(this.at, this.at + n);
      this.at += n;
      return b;
    }
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n && (await this.fill())) {
      const take = Math.min(n - got, this.chunk.length - this.at);
      parts.push(this.chunk.subarray(this.at, this.at + take));
      this.at += take;
      got += take;
    }
    return Buffer.concat(parts, got);
  }

  /** The next at most `max` bytes as they come (an empty buffer at the end of the stream). */
  async some(max: number): Promise<Buffer> {
    if (!(await this.fill())) return Buffer.alloc(0);
    const take = Math.min(max, this.chunk.length - this.at);
    const b = this.chunk.subarray(this.at, this.at + take);
    this.at += take;
    return b;
  }

  /** Reads and drops `n` bytes; returns how many there were. */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const b = await this.some(Math.min(left, 1 << 30));
      if (b.length === 0) break;
      left -= b.length;
    }
    return n - left;
  }

  /** Everything left, dropped (a layer's trailing padding still counts for its digest). */
  async drain(): Promise<void> {
    while ((await this.some(1 << 30)).length > 0);
  }
}
