// @nxtedition/rocksdb ships no types; we use only its abstract-level constructor.
declare module '@nxtedition/rocksdb' {
  export class RocksLevel {
    constructor(location: string, options?: Record<string, unknown>);
  }
}
