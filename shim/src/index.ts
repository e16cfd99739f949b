// Berth's shim: the resident host (many containers, each on its own shim v2 Task socket) and
// its parts, for the tasks service and tests.
export { Host, socketKey, VERSION, type HostOptions } from './host.js';
export { Forwarder, topicTypes, type ForwarderOptions } from './events.js';
export { metrics, statsV1, statsV2, oomKills, cgroupOf, type CgroupPaths } from './cgroup.js';
export { startTimeOf, stillRuns } from './process.js';
