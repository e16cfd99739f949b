// Image references as users type them: `host[:port]/repo/path[:tag][@digest]`. A name without a
// host is Docker Hub's (`busybox` is `docker.io/library/busybox:latest`), as docker and nerdctl
// read it; a reference with a host is kept exactly as given (ctr's image names).
import { invalidArgument } from '@berth/errdefs';
import { digestProblem } from './digest.js';

export interface Reference {
  /** the registry host as named (`127.0.0.1:5000`, `docker.io`) */
  host: string;
  /** repository path (`library/busybox`) */
  repository: string;
  tag?: string;
  digest?: string;
  /** the full name: the image record's name */
  name: string;
}

const pathComponent = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^[\w][\w.-]{0,127}$/;

function looksLikeHost(s: string): boolean {
  return s.includes('.') || s.includes(':') || s === 'localhost';
}

export function parseReference(input: string): Reference {
  const bad = (why: string) => invalidArgument(`failed to parse reference "${input}": ${why}`);
  if (!input || input !== input.trim()) throw bad('invalid reference format');
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    const p = digestProblem(digest);
    if (p) throw bad(p);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagPattern.test(tag)) throw bad('invalid tag format');
  }
  const parts = rest.split('/');
  let host: string;
  if (parts.length > 1 && looksLikeHost(parts[0]!)) host = parts.shift()!;
  else {
    host = 'docker.io';
    if (parts.length === 1) parts.unshift('library');
  }
  for (const p of parts) if (!pathComponent.test(p)) throw bad('invalid reference format');
  if (!tag && !digest) tag = 'latest';
  const repository = parts.join('/');
  const name = `${host}/${repository}${tag ? `:${tag}` : ''}${digest ? `@${digest}` : ''}`;
  return { host, repository, tag, digest, name };
}
