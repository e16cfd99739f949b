export * from './subjects.js';
export * from './headers.js';
export * from './status.js';
export * from './channel.js';
export { streamed } from './collect.js';
export * from './client.js';
export * from './server.js';
export * from './events.js';
export * from './eventfields.js';
export * from './live.js';
export * from './usage.js';
export * from './topics.js';
export * from './leases.js';
export * from './outbox.js';
export * from './json.js';
export * from './gc.js';
export * from './changes.js';
// for the process runner (@berth/kit), which speaks to the API only through the bus
export { readyCodecsInBackground } from '@berth/api';
