// OCI platforms as containerd's `platforms` package reads and matches them: `os/arch[/variant]`,
// architectures normalised (x86_64 → amd64, aarch64 → arm64; arm64's variant v8 is implied).
import { invalidArgument } from '@berth/errdefs';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

function normArch(arch: string, variant?: string): [string, string | undefined] {
  switch (arch) {
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      return ['amd64', variant === 'v1' ? undefined : variant];
    case 'aarch64':
    case 'arm64':
      return ['arm64', variant === 'v8' || !variant ? undefined : variant];
    case 'armhf':
      return ['arm', 'v7'];
    case 'armel':
      return ['arm', 'v6'];
    case 'arm':
      return ['arm', variant || 'v7'];
    case 'i386':
    case '386':
      return ['386', variant];
    default:
      return [arch, variant];
  }
}

export function normalize(p: Platform): Platform {
  const [architecture, variant] = normArch(p.architecture.toLowerCase(), p.variant?.toLowerCase() || undefined);
  return { os: p.os.toLowerCase(), architecture, ...(variant ? { variant } : {}) };
}

/** `linux/arm64`, `linux/arm/v7`, or an architecture alone (this OS). */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (!s || parts.length > 3 || parts.some((p) => !/^[A-Za-z0-9_.-]+$/.test(p))) throw invalidArgument(`unable to parse platform ${s}: "${s}": unknown operating system or architecture: invalid argument`);
  if (parts.length === 1) return normalize({ os: 'linux', architecture: parts[0]! });
  return normalize({ os: parts[0]!, architecture: parts[1]!, variant: parts[2] });
}

export function hostPlatform(): Platform {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch === 'ia32' ? '386' : process.arch;
  return normalize({ os: 'linux', architecture: arch });
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Whether a manifest's platform is one of `wanted` (containerd's platforms.Any of exact matchers). */
export function matches(wanted: Platform[], p: Platform | undefined): boolean {
  if (!p) return false;
  const n = normalize(p);
  return wanted.some((w) => w.os === n.os && w.architecture === n.architecture && (w.variant ?? '') === (n.variant ?? ''));
}
