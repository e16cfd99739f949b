// mkfifo(3) without a child process: mknod with S_IFIFO.
import { mknod, S_IF } from '@berth/native';

export function mkfifo(path: string, mode = 0o600): void {
  try {
    mknod(path, S_IF.FIFO | mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
}
