export { Tasks, type Peers, type Container, type Mount } from './local.js';
export { Bundles } from './bundle.js';
export { chooseRuntime, shimBinaryName } from './runtimes.js';
export { plugins } from './service.js';
