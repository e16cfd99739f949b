// The one store interface every metadata service uses: ordered string keys, JSON values,
// atomic batches, prefix scans, and transactions that hold a per-record lock. RocksDB (through
// @nxtedition/rocksdb's abstract-level RocksLevel) is the backend; another abstract-level
// database fits the same interface.
import { mkdirSync } from 'node:fs';
import { RocksLevel } from '@nxtedition/rocksdb';
import { KeyedLock } from './lock.js';

export * from './keys.js';
export { KeyedLock } from './lock.js';

export type BatchOp = { type: 'put'; key: string; value: unknown } | { type: 'del'; key: string };

/**
 * Told of every write to a store, around it: `begin` before the write reaches the database,
 * `end` once it is committed or failed (for a transaction, after its afterCommit callbacks, so
 * what those update is part of the write). The keys let a watcher ignore bookkeeping. Used by
 * @berth/bus changes.ts to tell readers that their copies may be stale.
 */
export interface WriteWatch {
  begin(keys: readonly string[]): boolean;
  end(): void;
}

export interface StoreOptions {
  watch?: WriteWatch;
}

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
  /**
   * Read-modify-write of some records as one: `fn` runs while it alone holds `keys`, reads
   * through `tx.get`, and queues writes with `tx.put`/`tx.del`/`tx.add`; they are committed in one
   * atomic batch when `fn` resolves (nothing is written when it throws). Two transactions on one
   * key never interleave, so "create if absent" has exactly one winner.
   */
  transact<R>(keys: string[], fn: (tx: Txn) => Promise<R>): Promise<R>;
  close(): Promise<void>;
}

export interface Txn {
  get<T>(key: string): Promise<T | undefined>;
  put(key: string, value: unknown): void;
  del(key: string): void;
  add(op: BatchOp): void;
  /** runs after the batch is committed (e.g. wake the event outbox's publisher) */
  afterCommit(fn: () => void): void;
  readonly ops: readonly BatchOp[];
}

interface LevelLike {
  open(): Promise<void>;
  close(): Promise<void>;
  get(key: string): Promise<string | undefined>;
  /** a point read on the calling thread, where the backend offers one */
  getSync?(key: string): string | undefined;
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
export async function levelStore(db: LevelLike, opts: StoreOptions = {}): Promise<Store> {
  await db.open();
  const locks = new KeyedLock();
  const watch = opts.watch;
  const rawBatch = (ops: BatchOp[]) => db.batch(ops.map((o) => (o.type === 'put' ? { type: 'put', key: o.key, value: JSON.stringify(o.value) } : o)));
  // a write between its watcher's begin and end (when the watcher counts these keys)
  const watched = async <T>(keys: readonly string[], write: () => Promise<T>): Promise<T> => {
    if (!watch?.begin(keys)) return write();
    try {
      return await write();
    } finally {
      watch.end();
    }
  };
  const store: Store = {
    async get<T>(key: string) {
      if (db.getSync) {
        const v = db.getSync(key);
        return v === undefined ? undefined : (JSON.parse(v) as T);
      }
      try {
        const v = await db.get(key);
        return v === undefined ? undefined : (JSON.parse(v) as T);
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    },
    put: (key, value) => (watch ? watched([key], () => db.put(key, JSON.stringify(value))) : db.put(key, JSON.stringify(value))),
    del: (key) => (watch ? watched([key], () => db.del(key)) : db.del(key)),
    batch: (ops) => (watch ? watched(ops.map((o) => o.key), () => rawBatch(ops)) : rawBatch(ops)),
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
    transact<R>(keys: string[], fn: (tx: Txn) => Promise<R>): Promise<R> {
      return locks.with(keys, async () => {
        const ops: BatchOp[] = [];
        const after: (() => void)[] = [];
        const tx: Txn = {
          get: (k) => store.get(k),
          put: (key, value) => void ops.push({ type: 'put', key, value }),
          del: (key) => void ops.push({ type: 'del', key }),
          add: (op) => void ops.push(op),
          afterCommit: (f) => void after.push(f),
          ops,
        };
        const result = await fn(tx);
        if (!ops.length) {
          for (const f of after) f();
          return result;
        }
        return watched(
          ops.map((o) => o.key),
          async () => {
            await rawBatch(ops);
            for (const f of after) f();
            return result;
          },
        );
      });
    },
    close: () => db.close(),
  };
  return store;
}

/** Opens (creating if needed) a RocksDB store in `dir`. */
export async function openStore(dir: string, opts: StoreOptions = {}): Promise<Store> {
  mkdirSync(dir, { recursive: true });
  // memtables of 2 MB (of an 8 MB budget) instead of RocksDB's 64 MB: a store's memtable grows
  // with every commit until it is flushed, so each store process grew ~0.5 KB per commit up to
  // 64 MB and more (measured, 80,000 commits: RSS +44 MB and growing by default, +14 MB and flat
  // with this). The same time per commit (45 vs 46 µs); the WAL and what a commit guarantees are
  // unchanged.
  const rocks = new RocksLevel(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8', compaction: 'level', memtableMemoryBudget: 8 << 20 });
  const r = rocks as unknown as Omit<LevelLike, 'batch'> & { batch(): ChainedBatch };
  const db: LevelLike = {
    open: () => r.open(),
    close: () => r.close(),
    get: (key) => r.get(key),
    put: (key, value) => r.put(key, value),
    del: (key) => r.del(key),
    iterator: (opts) => r.iterator(opts),
    // @nxtedition/rocksdb 12's array batch writes its chained batch without closing it, and the
    // database keeps every unclosed batch (with its native write batch) as an open resource: about
    // 3 KB kept per commit, for good (measured: 20,000 commits, 60 MB). A chained batch's own
    // write() closes it once written.
    batch: (ops) => {
      const b = r.batch();
      for (const o of ops) {
        if (o.type === 'put') b.put(o.key, o.value!);
        else b.del(o.key);
      }
      return b.write();
    },
  };
  const getSync = syncReader(rocks);
  if (getSync) db.getSync = getSync;
  return levelStore(db, opts);
}

interface ChainedBatch {
  put(key: string, value: string): void;
  del(key: string): void;
  write(): Promise<void>;
}

/**
 * RocksDB answers a point read of these small stores from its caches in microseconds; through
 * libuv's pool (the async get) the hop cost about ten times the read (measured: 97 vs 8 µs on a
 * loaded machine) plus a wake-up of another thread, on every call of every service. So reads run
 * on the calling thread, through the binding's synchronous read (internal, hence the check; the
 * version is pinned by the lockfile); without it, the async get serves.
 */
function syncReader(rocks: RocksLevel): ((key: string) => string | undefined) | undefined {
  const r = rocks as unknown as { status: string; _getManySync?: (keys: string[], opts: object) => (Buffer | undefined)[] };
  if (typeof r._getManySync !== 'function') return undefined;
  return (key) => {
    // the binding must not be called on a closed database: the error the async get gives
    if (r.status !== 'open') throw Object.assign(new Error('Database is not open'), { code: 'LEVEL_DATABASE_NOT_OPEN' });
    const v = r._getManySync!([key], {})[0];
    return v === undefined ? undefined : v.toString('utf8');
  };
}
