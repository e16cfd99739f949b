// @berth/content: the client side of the fast path, and the library for in-process use.
export * from './client.js';
export { Content, NamespacedWriter, type Ctx, type Info, type Status, type ContentOptions } from './local.js';
export { BlobStore, IngestWriter } from './blobs.js';
export { ContentApi } from './api.js';
export { ContentStore } from './store.js';
