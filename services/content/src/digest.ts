// Hashing content by the algorithm its digest names. Which digests are valid is decided in
// @berth/identifiers, for every service alike.
import { createHash, type Hash } from 'node:crypto';
import { digestAlgorithms, isDigest } from '@berth/identifiers';

export type Algorithm = (typeof digestAlgorithms)[number];

/** the algorithm a new ingest hashes with unless the client names another (containerd's Canonical) */
export const canonical: Algorithm = 'sha256';

export { digestErrors, digestProblem, isDigest } from '@berth/identifiers';

export function isAlgorithm(a: string): a is Algorithm {
  return (digestAlgorithms as readonly string[]).includes(a);
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
