// Digests as the OCI go-digest library (and so containerd) accepts them: `<algorithm>:<hex>`,
// lower-case hex of the algorithm's exact length. The error texts are go-digest's, because
// containerd puts them in its gRPC messages verbatim.
import { createHash, type Hash } from 'node:crypto';

export type Algorithm = 'sha256' | 'sha384' | 'sha512';

/** the algorithm a new ingest hashes with unless the client names another (containerd's Canonical) */
export const canonical: Algorithm = 'sha256';

const hexLength: Record<Algorithm, number> = { sha256: 64, sha384: 96, sha512: 128 };
const hexOnly = /^[a-f0-9]+$/;
// the general shape of a digest, for telling a malformed one from an unknown algorithm
const shape = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export const digestErrors = {
  format: 'invalid checksum digest format',
  length: 'invalid checksum digest length',
  unsupported: 'unsupported digest algorithm',
} as const;

export function isAlgorithm(a: string): a is Algorithm {
  return Object.hasOwn(hexLength, a);
}

/** Why `d` is not a usable digest, or undefined when it is one. */
export function digestProblem(d: string): string | undefined {
  const i = d.indexOf(':');
  if (i <= 0 || i + 1 === d.length) return digestErrors.format;
  const alg = d.slice(0, i);
  const hex = d.slice(i + 1);
  if (!isAlgorithm(alg)) return shape.test(d) ? digestErrors.unsupported : digestErrors.format;
  if (hex.length !== hexLength[alg]) return digestErrors.length;
  if (!hexOnly.test(hex)) return digestErrors.format;
  return undefined;
}

export function isDigest(d: string): boolean {
  return digestProblem(d) === undefined;
}

/** Algorithm and hex of a digest the caller has validated. */
export function splitDigest(d: string): { algorithm: Algorithm; hex: string } {
  const i = d.indexOf(':');
  return { algorithm: d.slice(0, i) as Algorithm, hex: d.slice(i + 1) };
}

/** The algorithm of `d` when it is a valid digest; otherwise the canonical one. */
export function algorithmOf(d: string | undefined): Algorithm {
  return d && isDigest(d) ? splitDigest(d).algorithm : canonical;
}

export function newHash(a: Algorithm): Hash {
  return createHash(a);
}

/** The digest of what a hash has seen so far, without finishing it (more data may follow). */
export function peekDigest(a: Algorithm, h: Hash): string {
  return `${a}:${h.copy().digest('hex')}`;
}

export function digestOf(a: Algorithm, data: Uint8Array | string): string {
  return `${a}:${createHash(a).update(data).digest('hex')}`;
}
