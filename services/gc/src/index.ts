export { mark, labelRefs, leaseExpiry, nodeId, type MarkResult } from './mark.js';
export { Collector, type CollectStats, type Peer } from './local.js';
export { Scheduler, type SchedulerConfig } from './scheduler.js';
export { parseDuration } from './duration.js';
