// usage: node bench/ctr.mjs [RUNS]
// ../shared/bench/ctr-bench.sh (the real ctr through pulls and runs, interleaved) against a fresh
// Berth stack and the reference containerd 1.6.20 in one run. Berth's processes are found by
// their --berth-root (services) and the shim host's --state, so only this run's are measured.
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { repo, startBerth, startReference } from './lib.mjs';

const runs = process.argv[2] ?? '30';
const script = resolve(repo, '..', 'shared', 'bench', 'ctr-bench.sh');
const berth = await startBerth();
const ref = startReference();
try {
  const root = join(berth.dir, 'root');
  const env = {
    ...process.env,
    RUNS: runs,
    PROCS_CMD: `pgrep -f -- '--berth-root ${root}( |$)'; pgrep -f 'nats-server.*${berth.dir}'`,
    SHIM_CMD: `pgrep -f 'main.js host --state ${join(berth.dir, 'state', 'shim')}( |$)'`,
  };
  const code = await new Promise((res) => spawn('bash', [script, berth.sock, ...(ref ? [ref.sock] : [])], { env, stdio: 'inherit' }).once('exit', res));
  process.exitCode = code ?? 1;
} finally {
  ref?.stop();
  await berth.stop();
}
