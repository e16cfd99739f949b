// Who may do what on Berth's NATS. Every process of a node gets its own NATS user (an nkey: the
// server's config holds only public keys, the seed stays in a 0600 file), and nats-server enforces
// per-user permissions, so NATS is not a second, open door beside the socket:
// - a service subscribes to its own subjects only and answers on reply subjects;
// - only the gateway and services publish on service subjects;
// - only services publish events (through JetStream), only the events service manages the stream;
// - the subscriber reads events (core subjects, JetStream consumers) and does nothing else;
// - a service publishes its own change notices, and only the gateway reads them;
// - the gateway reads live events (it serves Subscribe), but publishes none.
// Every user has an inbox prefix of its own (`_INBOX.<user>`), so nobody can read another's replies.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createUser, fromSeed } from '@nats-io/nkeys';

export const eventStream = 'BERTH_EVENTS';

export type Role = 'gateway' | 'service' | 'events' | 'subscriber';

export interface Principal {
  /** process name (`gateway`, `content`, ...) or `subscriber`: the credential file's name */
  name: string;
  /** the NATS user name; also the inbox prefix's token */
  user: string;
  role: Role;
}

export interface Permissions {
  publish: { allow: string[] };
  subscribe: { allow: string[]; deny?: string[] };
  allow_responses?: boolean;
}

/** The credential file (`<dir>/<name>.json`, mode 0600): what a NATS client needs to connect. */
export interface Credential {
  user: string;
  /** nkey seed (`SU...`); or `password` for a cluster that uses user/password */
  nkey_seed?: string;
  password?: string;
  inbox_prefix: string;
}

export function roleOf(name: string): Role {
  if (name === 'gateway' || name === 'events' || name === 'subscriber') return name;
  return 'service';
}

export function inboxPrefix(user: string): string {
  return `_INBOX.${user}`;
}

/** A NATS user name from anything: a single subject token of safe characters. */
export function userName(...parts: string[]): string {
  return parts.filter(Boolean).map((p) => p.replace(/[^A-Za-z0-9_-]/g, '_')).join('-');
}

// What reading the event history takes: nats.js v3's consumers (ordered and named, pull) against
// nats-server 2.9. Deleting or listing consumers is not in it: the events service's own consumers
// are none of a subscriber's business (an ephemeral consumer goes away by itself when idle).
const readHistory = [
  '$JS.API.INFO',
  `$JS.API.STREAM.INFO.${eventStream}`,
  `$JS.API.CONSUMER.CREATE.${eventStream}`,
  `$JS.API.CONSUMER.CREATE.${eventStream}.>`,
  `$JS.API.CONSUMER.DURABLE.CREATE.${eventStream}.*`,
  `$JS.API.CONSUMER.INFO.${eventStream}.*`,
  `$JS.API.CONSUMER.MSG.NEXT.${eventStream}.*`,
  `$JS.ACK.${eventStream}.>`,
  `$JS.FC.${eventStream}.>`,
];

/**
 * The permissions of one user. `node` is the node's subject token (as in
 * `berth.<node>.<service>.v1.<Method>`, already escaped).
 */
export function permissionsFor(p: Principal, node: string): Permissions {
  const inbox = `${inboxPrefix(p.user)}.>`;
  // the micro service API: PING/INFO/STATS for all, by service name, by service name and id
  const micro = (svc: string) => ['$SRV.PING', '$SRV.INFO', '$SRV.STATS', `$SRV.*.${svc}`, `$SRV.*.${svc}.*`];
  const callServices = `berth.${node}.*.v1.>`;
  switch (p.role) {
    case 'subscriber':
      return {
        publish: { allow: readHistory },
        // (berth-json: the queue group of an earlier events service's JSON mirror, never to be joined)
        // berth.progress.>: a pull's per-layer progress (the images service's Transfer API)
        subscribe: { allow: ['berth.events.>', 'berth.json.events.>', 'berth.gc.>', 'berth.progress.>', inbox], deny: ['> berth-json'] },
      };
    case 'gateway':
      return {
        // replies and stream frames go to the callers' and services' inboxes; $SRV.INFO for Introspection
        publish: { allow: [callServices, '_INBOX.>', '$SRV.>'] },
        // berth.changes.<node>.*: the services' change notices, for the gateway's read cache;
        // berth.events.>: the live events it answers Events.Subscribe with (gateway/src/subscribe.ts)
        subscribe: { allow: [inbox, ...micro('berth-gateway'), `berth.changes.${node}.*`, 'berth.events.>'] },
        allow_responses: true,
      };
    case 'service':
    case 'events': {
      const perms: Permissions = {
        // services call each other (content asks leases, namespaces asks everyone) and publish
        // their own events into the stream (a JetStream publish is a request on the subject),
        // each with its JSON form (@berth/bus storeEvent)
        publish: { allow: [callServices, '_INBOX.>', 'berth.events.>', 'berth.json.events.>', '$JS.API.INFO', `$JS.API.STREAM.INFO.${eventStream}`] },
        subscribe: { allow: [`berth.${node}.${p.name}.v1.>`, inbox, ...micro(`berth-${p.name}`)] },
        allow_responses: true,
      };
      // each service its own change notices (@berth/bus changes.ts), read by the gateway alone
      perms.publish.allow.push(`berth.changes.${node}.${p.name}`);
      // the collector publishes each collection's figures as JSON (berth.gc.<node>.collected)
      if (p.name === 'gc') perms.publish.allow.push(`berth.gc.${node}.>`);
      // a pull publishes its progress on a subject of its own (berth.progress.<node>.<pull id>)
      if (p.name === 'images') perms.publish.allow.push(`berth.progress.${node}.>`);
      if (p.role === 'events') {
        // the events path: relays, keeps the stream and reads it for Replay
        perms.publish.allow = [...new Set([...perms.publish.allow, `$JS.API.STREAM.*.${eventStream}`, `$JS.API.STREAM.MSG.*.${eventStream}`, ...readHistory, `$JS.API.CONSUMER.DELETE.${eventStream}.*`])];
        perms.subscribe.allow.push('berth.events.>');
      }
      return perms;
    }
  }
}

function writePrivate(file: string, text: string): void {
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, 0o600);
}

/**
 * The credential of each principal in `dir` (mode 0700), made once and kept: a service restarted,
 * or the whole stack, connects again with the same key, and a subscriber's copy stays valid.
 * Returns each principal's public key.
 */
export function ensureCredentials(dir: string, principals: Principal[]): Map<string, string> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const keys = new Map<string, string>();
  for (const p of principals) {
    const file = join(dir, `${p.name}.json`);
    let cred: Credential | undefined;
    if (existsSync(file)) {
      const old = readCredential(file);
      if (old.user === p.user && old.nkey_seed) cred = old;
    }
    if (!cred) {
      const kp = createUser();
      cred = { user: p.user, nkey_seed: new TextDecoder().decode(kp.getSeed()), inbox_prefix: inboxPrefix(p.user) };
      writePrivate(file, JSON.stringify(cred, null, 2) + '\n');
    }
    chmodSync(file, 0o600);
    keys.set(p.name, fromSeed(new TextEncoder().encode(cred.nkey_seed!)).getPublicKey());
  }
  return keys;
}

export function readCredential(file: string): Credential {
  const c = JSON.parse(readFileSync(file, 'utf8')) as Partial<Credential>;
  if (typeof c.user !== 'string' || (!c.nkey_seed && !c.password)) throw new Error(`${file}: not a credential (needs "user" and "nkey_seed" or "password")`);
  return { ...c, user: c.user, inbox_prefix: c.inbox_prefix || inboxPrefix(c.user) };
}

export interface AuthUser {
  nkey: string;
  permissions: Permissions;
}

/**
 * The users of one node's stack: each of its processes and the subscriber, credentials made (or
 * kept) in `dir`. `userPrefix` tells apart the users of several nodes on one server (their node).
 */
export function stackUsers(dir: string, processes: string[], nodeToken: string, userPrefix = ''): AuthUser[] {
  const who: Principal[] = [...processes, 'subscriber'].map((name) => ({ name, user: userName(userPrefix, name), role: roleOf(name) }));
  const keys = ensureCredentials(dir, who);
  return who.map((p) => ({ nkey: keys.get(p.name)!, permissions: permissionsFor(p, nodeToken) }));
}

/** nats-server's `authorization` block (its config format reads JSON). No user: nobody gets in. */
export function authorizationConf(users: AuthUser[]): string {
  return `authorization: ${JSON.stringify({ users }, null, 2)}`;
}
