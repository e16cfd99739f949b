// The image a container runs: its record (pulled through Berth's Transfer API when missing, as
// `docker run` pulls), the manifest for this machine's platform, its config, and the chain id
// of its unpacked layers (the snapshot parent).
import { createHash } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { parseReference } from '@berth/identifiers';
import { CommandError, isNotFound, stream, unary } from '../grpc.js';

export interface ImageConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  WorkingDir?: string;
  Labels?: Record<string, string> | null;
  StopSignal?: string;
}

export interface ResolvedImage {
  name: string;
  config: ImageConfig;
  chainId: string;
}

interface Descriptor {
  media_type: string;
  digest: string;
  size: number;
}

const goArch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x' };

async function readBlob(c: grpc.Client, ns: string, digest: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  await stream<{ data: Buffer }>(c, '/containerd.services.content.v1.Content/Read', { digest, offset: 0, size: 0 }, ns, (m) => parts.push(Buffer.from(m.data)));
  return Buffer.concat(parts);
}

/** Docker's chain id: the first diff id, then sha256 of "<chain> <diff>" for each next layer. */
export function chainId(diffIds: string[]): string {
  let chain = diffIds[0] ?? '';
  for (const d of diffIds.slice(1)) chain = `sha256:${createHash('sha256').update(`${chain} ${d}`).digest('hex')}`;
  return chain;
}

async function manifestFor(c: grpc.Client, ns: string, target: Descriptor): Promise<{ config: Descriptor }> {
  const doc = JSON.parse((await readBlob(c, ns, target.digest)).toString('utf8'));
  if (!Array.isArray(doc.manifests)) return doc;
  const arch = goArch[process.arch] ?? process.arch;
  const m = (doc.manifests as Array<Descriptor & { platform?: { os: string; architecture: string } }>).find((x) => x.platform?.os === 'linux' && x.platform.architecture === arch);
  if (!m) throw new CommandError(`no matching manifest for linux/${arch} in the manifest list entries`, 125);
  return manifestFor(c, ns, m);
}

/**
 * The image by the name a user types (`busybox` is `docker.io/library/busybox:latest`); `pull`
 * fetches and unpacks it when it is missing. Registries on loopback speak plain HTTP, as
 * docker's default insecure registries (127.0.0.0/8) do.
 */
export async function resolveImage(c: grpc.Client, ns: string, ref: string, pull: (name: string, plainHttp: boolean) => Promise<void>): Promise<ResolvedImage> {
  let name: string;
  let host: string;
  try {
    ({ name, host } = parseReference(ref));
  } catch (e) {
    throw new CommandError((e as Error).message, 125);
  }
  let image: { target: Descriptor };
  try {
    ({ image } = await unary(c, '/containerd.services.images.v1.Images/Get', { name }, ns));
  } catch (e) {
    if (!isNotFound(e)) throw e;
    process.stderr.write(`Unable to find image '${ref}' locally\n`);
    await pull(name, /^(127\.|localhost(:|$)|\[::1\])/.test(host));
    ({ image } = await unary(c, '/containerd.services.images.v1.Images/Get', { name }, ns));
  }
  const manifest = await manifestFor(c, ns, image.target);
  const doc = JSON.parse((await readBlob(c, ns, manifest.config.digest)).toString('utf8'));
  return { name, config: doc.config ?? {}, chainId: chainId(doc.rootfs?.diff_ids ?? []) };
}
