// A small JSON record rewritten in place: a container's berth-shim.json changes at every step of
// a run (create, start, exit, delete), and a temp file renamed over it each time cost a new inode
// per step; on the state folder's ext4, allocating one scans the inode table past recently
// deleted inodes, a sixth of the shim host's CPU per run.
import { closeSync, constants as C, fstatSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';

/**
 * A write() of at most one page to a regular file at offset 0 is all or nothing to a process
 * that dies (kill -9 included: the kernel checks for a fatal signal only between pages), so a
 * reader after a crash finds the last record or the one before, as with a rename.
 */
const onePage = 4096;

export class RecordFile {
  private fd: number | null = null;
  /** the file's length: a shorter record is padded with spaces (JSON ignores them), never truncated, which would be a second write */
  private length = 0;

  constructor(readonly path: string) {}

  write(value: unknown): void {
    const text = Buffer.from(JSON.stringify(value));
    if (text.length <= onePage && this.inPlace(text)) return;
    // larger than a page (many execs): a temp file renamed over it
    this.close();
    writeFileSync(`${this.path}.tmp`, text);
    renameSync(`${this.path}.tmp`, this.path);
  }

  private inPlace(text: Buffer): boolean {
    if (this.fd === null) {
      this.fd = openSync(this.path, C.O_RDWR | C.O_CREAT, 0o644);
      this.length = fstatSync(this.fd).size;
    }
    if (this.length > onePage) return false;
    const out = text.length >= this.length ? text : Buffer.concat([text, Buffer.alloc(this.length - text.length, 0x20)]);
    if (writeSync(this.fd, out, 0, out.length, 0) !== out.length) return false;
    this.length = out.length;
    return true;
  }

  close(): void {
    if (this.fd === null) return;
    try {
      closeSync(this.fd);
    } catch {}
    this.fd = null;
  }
}
