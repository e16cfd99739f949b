export * from './subjects.js';
export * from './headers.js';
export * from './status.js';
export * from './channel.js';
export * from './client.js';
export * from './server.js';
export * from './events.js';
export * from './usage.js';
