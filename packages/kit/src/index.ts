export * from './config.js';
export * from './service.js';
export * from './heap.js';
export * from './nodeargs.js';
