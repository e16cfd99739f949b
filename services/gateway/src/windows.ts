// The gateway's HTTP/2 receive windows. grpc-js leaves a server's at HTTP/2's default of 64 KiB
// (its window option is read by the client side only), so a client sending a 1 MiB message (a
// content Write's chunk, as ctr sends them) waited for the gateway's WINDOW_UPDATE sixteen
// times per message, each a round trip between the two processes; containerd's server grows its
// window to what the connection carries. A stream the gateway has paused (its bus peer has no
// room) takes no more than its window, so what a client can make the gateway hold stays bounded.
import type * as http2 from 'node:http2';
import type * as grpc from '@grpc/grpc-js';

/** Per stream: a whole 1 MiB message and the next one's start. */
export const streamWindow = 2 << 20;
/** Per connection, shared by its streams. */
export const connectionWindow = 4 << 20;

/**
 * Opens the windows of every connection `server` accepts from now on. It reaches the HTTP/2
 * servers inside grpc-js (not part of its API); where they are not there, nothing changes.
 */
export function openWindows(server: grpc.Server): void {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) return;
  for (const s of servers.keys() as Iterable<http2.Http2Server>) {
    if (typeof s?.on !== 'function') continue;
    s.on('session', (session: http2.ServerHttp2Session) => {
      try {
        session.settings({ initialWindowSize: streamWindow });
        session.setLocalWindowSize(connectionWindow);
      } catch {
        // a session that is already closing keeps the defaults
      }
    });
  }
}
