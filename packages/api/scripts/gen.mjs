// Builds the containerd API for the rest of the workspace from the .proto files that Debian's
// golang-github-containerd-containerd-dev installs. Two outputs, both gitignored:
//   generated/containerd.json  a protobufjs descriptor of every message and service (loaded at runtime)
//   src/generated/             TypeScript types of every message (proto-loader-gen-types)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, '..', 'generated');
const typesOut = resolve(here, '..', 'src', 'generated');
const gocode = process.env.BERTH_GOCODE ?? '/usr/share/gocode/src';
const includes = [
  resolve(here, '..', 'proto'),
  gocode,
  join(gocode, 'github.com/gogo/protobuf'),
  join(gocode, 'github.com/gogo/googleapis'),
  '/usr/include',
];
const ctrd = 'github.com/containerd/containerd';
const files = [
  ...['events/container', 'events/content', 'events/image', 'events/namespace', 'events/snapshot', 'events/task',
    'services/containers/v1/containers', 'services/content/v1/content', 'services/diff/v1/diff',
    'services/events/v1/events', 'services/images/v1/images', 'services/introspection/v1/introspection',
    'services/leases/v1/leases', 'services/namespaces/v1/namespace', 'services/snapshots/v1/snapshots',
    'services/tasks/v1/tasks', 'services/ttrpc/events/v1/events', 'services/version/v1/version',
    'types/descriptor', 'types/metrics', 'types/mount', 'types/platform', 'types/task/task',
  ].map((f) => `${ctrd}/api/${f}.proto`),
  `${ctrd}/runtime/v2/task/shim.proto`,
  `${ctrd}/runtime/v2/runc/options/oci.proto`,
  // cgroup metrics a shim's Stats answers (as Any), v1 and v2 hierarchies
  'github.com/containerd/cgroups/stats/v1/metrics.proto',
  'github.com/containerd/cgroups/v2/stats/metrics.proto',
  // Berth's own additions (in this package's proto/ folder)
  'berth/events/v1/replay.proto',
  'berth/shim/v1/host.proto',
  'berth/images/v1/transfer.proto',
  'berth/gc/v1/gc.proto',
];

const missing = files.filter((f) => !includes.some((i) => existsSync(join(i, f))));
if (missing.length) {
  console.error(`gen: containerd .proto files not found (install golang-github-containerd-containerd-dev):\n  ${missing.join('\n  ')}`);
  process.exit(1);
}

const root = new protobuf.Root();
root.resolvePath = (origin, target) => {
  for (const i of includes) {
    const p = join(i, target);
    if (existsSync(p)) return p;
  }
  return protobuf.util.path.resolve(origin, target);
};
root.loadSync(files.map((f) => includes.map((i) => join(i, f)).find(existsSync)), { keepCase: true });
root.resolveAll();

rmSync(out, { recursive: true, force: true });
rmSync(typesOut, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'containerd.json'), JSON.stringify(root.toJSON()));

const bin = resolve(here, '..', 'node_modules', '.bin', 'proto-loader-gen-types');
execFileSync(bin, [
  '--keepCase', '--longs=Number', '--enums=String', '--defaults', '--oneofs', '--bytes=Buffer',
  '--grpcLib=@grpc/grpc-js', '--importFileExtension=.js', '--outDir', typesOut,
  ...includes.flatMap((i) => ['-I', i]), '--', ...files,
], { stdio: ['ignore', 'ignore', 'inherit'] });
console.log(`gen: ${files.length} protos -> ${out}`);
