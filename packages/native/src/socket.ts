// Unix sockets that carry fds, and terminal sizes: runc hands the pty master of a `-t` container
// to the --console-socket as SCM_RIGHTS, and ctr's ResizePty becomes TIOCSWINSZ on it.
import { addon, type Received } from './addon.js';

export type { Received };

/** A non-blocking, close-on-exec unix socket listening on `path` (watch it, then accept()). */
export function unixListen(path: string, backlog = 16): number {
  return addon.unixListen(path, backlog);
}

/** The next connection on a listening fd, non-blocking and close-on-exec; null if none waits. */
export function accept(fd: number): number | null {
  return addon.accept(fd);
}

/** A connected pair of non-blocking, close-on-exec unix stream sockets. */
export function socketpair(): [number, number] {
  return addon.socketpair();
}

/**
 * recvmsg(2) with room for `maxFds` SCM_RIGHTS descriptors: the bytes and the fds received
 * (close-on-exec; the caller owns and closes them), or null when a non-blocking socket has
 * nothing yet. Zero bytes and no fds means the peer closed.
 */
export function recvmsg(fd: number, maxBytes = 4096, maxFds = 8): Received | null {
  return addon.recvmsg(fd, maxBytes, maxFds);
}

/** sendmsg(2) with `fds` as SCM_RIGHTS; returns the bytes sent. */
export function sendmsg(fd: number, data: Buffer | string, fds: number[] = []): number {
  return addon.sendmsg(fd, typeof data === 'string' ? Buffer.from(data) : data, fds);
}

/** ioctl(TIOCSWINSZ): the window size of a terminal (a pty master or slave). */
export function setWinsize(fd: number, rows: number, cols: number): void {
  addon.setWinsize(fd, rows, cols);
}

/** ioctl(TIOCGWINSZ). */
export function getWinsize(fd: number): { rows: number; cols: number } {
  return addon.getWinsize(fd);
}
