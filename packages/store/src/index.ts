// The one store interface every metadata service uses: ordered string keys, JSON values,
// atomic batches, prefix scans. RocksDB (through @nxtedition/rocksdb's abstract-level
// RocksLevel) is the backend; another abstract-level database fits the same interface.
import { mkdirSync } from 'node:fs';
import { RocksLevel } from '@nxtedition/rocksdb';

export type BatchOp = { type: 'put'; key: string; value: unknown } | { type: 'del'; key: string };

export interface Store {
  get<T>(key: string): Promise<T | undefined>;
  put(key: string, value: unknown): Promise<void>;
  del(key: string): Promise<void>;
  /** all or nothing */
  batch(ops: BatchOp[]): Promise<void>;
  /** entries whose key starts with `prefix`, in key order */
  entries<T>(prefix: string): AsyncIterable<[string, T]>;
  /** whether any key starts with `prefix` */
  hasPrefix(prefix: string): Promise<boolean>;
  close(): Promise<void>;
}

interface LevelLike {
  open(): Promise<void>;
  close(): Promise<void>;
  get(key: string): Promise<string | undefined>;
  put(key: string, value: string): Promise<void>;
  del(key: string): Promise<void>;
  batch(ops: { type: 'put' | 'del'; key: string; value?: string }[]): Promise<void>;
  iterator(opts: { gte: string; lt: string; limit?: number }): AsyncIterable<[string, string]> & { close(): Promise<void> };
}

// The largest code unit: every key with the prefix sorts below prefix + this.
const END = '\uffff';

function isNotFound(err: unknown): boolean {
  return (err as { code?: string })?.code === 'LEVEL_NOT_FOUND' || (err as { notFound?: boolean })?.notFound === true;
}

/** Wraps any abstract-level database (string keys and values). */
export async function levelStore(db: LevelLike): Promise<Store> {
  await db.open();
  return {
    async get<T>(key: string) {
      try {
        const v = await db.get(key);
        return v === undefined ? undefined : (JSON.parse(v) as T);
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    },
    put: (key, value) => db.put(key, JSON.stringify(value)),
    del: (key) => db.del(key),
    batch: (ops) => db.batch(ops.map((o) => (o.type === 'put' ? { type: 'put', key: o.key, value: JSON.stringify(o.value) } : o))),
    async *entries<T>(prefix: string): AsyncIterable<[string, T]> {
      for await (const [k, v] of db.iterator({ gte: prefix, lt: prefix + END })) yield [k, JSON.parse(v) as T];
    },
    async hasPrefix(prefix) {
      const it = db.iterator({ gte: prefix, lt: prefix + END, limit: 1 });
      try {
        for await (const _ of it) return true;
        return false;
      } finally {
        await it.close();
      }
    },
    close: () => db.close(),
  };
}

/** Opens (creating if needed) a RocksDB store in `dir`. */
export async function openStore(dir: string): Promise<Store> {
  mkdirSync(dir, { recursive: true });
  const db = new RocksLevel(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' }) as unknown as LevelLike;
  return levelStore(db);
}
