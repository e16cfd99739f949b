// Registry credentials and the two challenges a registry answers a 401 with: Basic (send the
// user and password) and Bearer (fetch a token from the realm it names, with the credentials if
// there are any, for the repository's pull scope). Credentials come from the pull itself or
// from a Docker-style config.json (`auths` by host, `auth` = base64 of user:password).
import { readFileSync } from 'node:fs';

export interface Credentials {
  username: string;
  password: string;
}

/** Credentials by registry host from a Docker config.json; a missing file has none. */
export function loadDockerConfig(path: string): Map<string, Credentials> {
  const out = new Map<string, Credentials>();
  if (!path) return out;
  let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw new Error(`registry config ${path}: ${(e as Error).message}`);
  }
  for (const [key, entry] of Object.entries(doc.auths ?? {})) {
    let username = entry.username ?? '';
    let password = entry.password ?? '';
    if (entry.auth) {
      const plain = Buffer.from(entry.auth, 'base64').toString('utf8');
      const i = plain.indexOf(':');
      if (i > 0) [username, password] = [plain.slice(0, i), plain.slice(i + 1)];
    }
    // keys may be URLs ("https://index.docker.io/v1/"): the host is what counts
    const host = key.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
    out.set(host === 'index.docker.io' ? 'docker.io' : host, { username, password });
  }
  return out;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** `Bearer realm="https://auth",service="reg",scope="repository:x:pull"` and the like. */
export function parseChallenges(header: string | null): Challenge[] {
  if (!header) return [];
  const out: Challenge[] = [];
  const re = /\s*([A-Za-z]+)\s+((?:[A-Za-z_]+=(?:"(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?\s*)*)/g;
  for (let m; (m = re.exec(header)); ) {
    const params: Record<string, string> = {};
    const pre = /([A-Za-z_]+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
    for (let p; (p = pre.exec(m[2]!)); ) params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
    out.push({ scheme: m[1]!.toLowerCase(), params });
  }
  return out;
}

export const basic = (c: Credentials) => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
