// The layer applier and tar reader/writer, for tests and other services on the node.
export * from './tar.js';
export * from './tarwriter.js';
export * from './apply.js';
export * from './decompress.js';
export * from './local.js';
export * from './mounts.js';
