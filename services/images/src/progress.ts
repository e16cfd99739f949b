// A pull's progress: every blob it handles with bytes so far, total and state, sent to whoever
// listens (the Pull stream, a NATS subject) at most every `interval` ms, and at once whenever a
// blob changes state.
export type BlobState = 'waiting' | 'downloading' | 'downloaded' | 'exists' | 'unpacking' | 'unpacked' | 'uploading' | 'uploaded' | 'mounted' | 'failed';

export interface BlobProgress {
  digest: string;
  media_type: string;
  offset: number;
  total: number;
  status: BlobState;
}

export interface ProgressReport {
  status: string;
  layers: BlobProgress[];
}

export class Progress {
  private readonly blobs = new Map<string, BlobProgress>();
  private status = 'resolving';
  private timer?: NodeJS.Timeout;
  private dirty = false;

  constructor(
    private readonly sink: (r: ProgressReport) => void,
    private readonly interval = 100,
  ) {}

  private report(): ProgressReport {
    return { status: this.status, layers: [...this.blobs.values()].map((b) => ({ ...b })) };
  }

  /** sends now */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.dirty = false;
    this.sink(this.report());
  }

  private soon(): void {
    this.dirty = true;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      if (this.dirty) this.flush();
    }, this.interval);
  }

  phase(status: string): void {
    this.status = status;
    this.flush();
  }

  add(digest: string, media_type: string, total: number): void {
    if (!this.blobs.has(digest)) this.blobs.set(digest, { digest, media_type, offset: 0, total, status: 'waiting' });
    this.soon();
  }

  bytes(digest: string, offset: number): void {
    const b = this.blobs.get(digest);
    if (!b) return;
    b.offset = offset;
    if (b.status === 'waiting') b.status = 'downloading';
    this.soon();
  }

  state(digest: string, status: BlobState): void {
    const b = this.blobs.get(digest);
    if (!b) return;
    b.status = status;
    if (status === 'downloaded' || status === 'exists' || status === 'uploaded' || status === 'mounted') b.offset = b.total;
    this.flush();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
