// What is running: Introspection.Plugins asks the bus which Berth services answer on this
// node ($SRV.INFO of the NATS micro service API) and lists the containerd plugins each one
// declares in its metadata. Server() returns a UUID kept under the gateway's root.
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';

export interface PluginInfo {
  type: string;
  id: string;
  requires?: string[];
  platforms?: { os: string; architecture: string; variant?: string }[];
  exports?: Record<string, string>;
  capabilities?: string[];
}

interface ServiceInfoReply {
  name: string;
  metadata?: Record<string, string>;
}

/** Plugins of every Berth service that answers on `node`, deduplicated (replicas list once). */
export async function discoverPlugins(nc: NatsConnection, node: string, maxWait = 500): Promise<PluginInfo[]> {
  const found = new Map<string, PluginInfo>();
  try {
    const replies = await nc.requestMany('$SRV.INFO', '', { strategy: 'stall', stall: 100, maxWait });
    for await (const m of replies) {
      if (m.headers?.hasError) break;
      const info = m.json<ServiceInfoReply>();
      if (!info.name?.startsWith('berth-') || info.metadata?.node !== node) continue;
      for (const p of JSON.parse(info.metadata?.plugins ?? '[]') as PluginInfo[]) found.set(`${p.type}/${p.id}`, p);
    }
  } catch (err) {
    if (!/no responders/i.test(String(err))) throw err;
  }
  return [...found.values()];
}

/** The server's UUID: made once, kept in `dir/uuid`, the same after every restart. */
export function serverUuid(dir: string): string {
  const f = join(dir, 'uuid');
  try {
    const v = readFileSync(f, 'utf8').trim();
    if (v) return v;
  } catch {
    // first start
  }
  mkdirSync(dir, { recursive: true });
  const v = randomUUID();
  writeFileSync(`${f}.tmp`, v + '\n');
  renameSync(`${f}.tmp`, f);
  return v;
}
