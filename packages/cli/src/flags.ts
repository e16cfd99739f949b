// What every command shares and that loads nothing else: ctr's flags and environment, and the
// CLI's error (grpc.ts re-exports both; `berth pull` takes them from here without grpc-js).

/** ctr's flags and environment, shared by every command that talks to the stack. */
export const common = {
  address: { type: 'string', short: 'a', default: process.env.CONTAINERD_ADDRESS || '/run/berth/berth.sock' },
  namespace: { type: 'string', short: 'n', default: process.env.CONTAINERD_NAMESPACE || 'default' },
} as const;

/**
 * A failure the CLI reports as `berth: <message>`; `status` is the exit status (1 unless a
 * command, like docker's run, words its failures with other codes); `code` the gRPC status.
 */
export class CommandError extends Error {
  constructor(
    message: string,
    readonly status = 1,
    readonly code?: number,
  ) {
    super(message);
  }
}

/** ctr's `--user USER[:PASSWORD]` for a registry: no colon, no password. */
export function credentials(user: string | undefined): { username: string; password: string } {
  const u = user ?? '';
  const i = u.indexOf(':');
  return i >= 0 ? { username: u.slice(0, i), password: u.slice(i + 1) } : { username: u, password: '' };
}
