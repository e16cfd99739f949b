// Digests as the OCI go-digest library (and so containerd) accepts them: `<algorithm>:<hex>`,
// lower-case hex of the algorithm's exact length. The error texts are go-digest's, because
// containerd puts them in its gRPC messages verbatim.

export const digestAlgorithms = ['sha256', 'sha384', 'sha512'] as const;

const hexLength: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };
const hexOnly = /^[a-f0-9]+$/;
// the general shape of a digest, for telling a malformed one from an unknown algorithm
const shape = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export const digestErrors = {
  format: 'invalid checksum digest format',
  length: 'invalid checksum digest length',
  unsupported: 'unsupported digest algorithm',
} as const;

/** Why `d` is not a usable digest, or undefined when it is one. */
export function digestProblem(d: string): string | undefined {
  const i = d.indexOf(':');
  if (i <= 0 || i + 1 === d.length) return digestErrors.format;
  const alg = d.slice(0, i);
  const hex = d.slice(i + 1);
  if (!Object.hasOwn(hexLength, alg)) return shape.test(d) ? digestErrors.unsupported : digestErrors.format;
  if (hex.length !== hexLength[alg]) return digestErrors.length;
  if (!hexOnly.test(hex)) return digestErrors.format;
  return undefined;
}

export function isDigest(d: string): boolean {
  return digestProblem(d) === undefined;
}
