// Which shim runs a container: its runtime name, mapped by the [tasks] runtimes setting to
// Berth's resident shim host ("berth") or a stock shim binary ("stock"), as containerd maps a
// runtime name to `containerd-shim-<name>-<version>`. An absolute path names a shim binary,
// as containerd allows.
import { accessSync, constants, existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { BerthError, Code, invalidArgument } from '@berth/errdefs';

export type ShimKind = 'berth' | 'stock';

export interface RuntimeChoice {
  kind: ShimKind;
  /** the shim binary (stock) */
  binary: string;
}

/** containerd's shim binary name for a runtime name: io.containerd.runc.v2 → containerd-shim-runc-v2. */
export function shimBinaryName(runtime: string): string {
  const parts = runtime.split('.');
  if (parts.length < 2) return '';
  return `containerd-shim-${parts.at(-2)}-${parts.at(-1)}`;
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

const notInstalled = (runtime: string, name: string) =>
  new BerthError(Code.NotFound, `failed to start shim: failed to resolve runtime path: runtime "${runtime}" binary not installed "${name}": file does not exist`);

export function chooseRuntime(runtime: string, runtimes: Record<string, string>, berthAvailable: boolean): RuntimeChoice {
  if (!runtime) throw invalidArgument('failed to start shim: failed to resolve runtime path: no runtime name');
  if (isAbsolute(runtime)) {
    if (!existsSync(runtime)) throw new BerthError(Code.NotFound, `failed to start shim: failed to resolve runtime path: invalid custom binary path: stat ${runtime}: no such file or directory`);
    return { kind: 'stock', binary: runtime };
  }
  const choice = runtimes[runtime];
  // the v1 linux runtime's shim speaks shim v1, which Berth does not: runc v2's shim runs it
  const stockName = runtime === 'io.containerd.runtime.v1.linux' ? 'containerd-shim-runc-v2' : shimBinaryName(runtime);
  if (choice === 'berth' && berthAvailable) return { kind: 'berth', binary: '' };
  if (choice !== undefined && choice !== 'berth' && choice !== 'stock') throw invalidArgument(`runtime "${runtime}": [tasks] runtimes says "${choice}", want "berth" or "stock"`);
  if (!stockName) {
    throw invalidArgument(
      `failed to start shim: failed to resolve runtime path: invalid runtime name ${runtime}, correct runtime name should be either format like \`io.containerd.runc.v1\` or a full path to the binary`,
    );
  }
  const binary = onPath(stockName);
  if (!binary) throw notInstalled(runtime, stockName);
  return { kind: 'stock', binary };
}
