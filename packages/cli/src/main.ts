// berth: the command line. `berth up` runs the local stack in the foreground;
// `berth config default` prints the default configuration.
// Each command loads only what it uses: a `berth pull` should not pay for the supervisor's
// modules (about 0.3 s of a short command's start on this machine).
import { parseArgs } from 'node:util';
import type { Config } from '@berth/kit';

const usage = `usage:
  berth up [--config FILE] [--root DIR] [--state DIR] [--address SOCK] [--node ID] [--nats-url URL | --nats-port N]
  berth config default
  berth events [--address SOCK] [--since-seq N | --since TIME] [--follow] [--json] [FILTER...]
  berth gc [--address SOCK] [--json]   (a garbage collection now, and its figures)
  berth pull [-a SOCK] [-n NS] [--platform P]... [--all-platforms] [--plain-http] [-u USER:PASS] REF
  berth push [-a SOCK] [-n NS] [--platform P]... [--plain-http] [-u USER:PASS] REMOTE [LOCAL]
  berth export [-a SOCK] [-n NS] [--platform P]... [--all-platforms] [--skip-manifest-json] FILE|- NAME...
  berth import [-a SOCK] [-n NS] [--base-name NAME [--index-name]] [--no-unpack] [--platform P]... [--all-platforms] FILE|-
  berth images [-a SOCK] [-n NS] [-q] [FILTER...]
  berth rmi [-a SOCK] [-n NS] REF...
  berth run [-d] [-t] [-i] [--rm] [--name NAME] [-e K=V]... [-w DIR] [-u USER] [--entrypoint CMD] [--address SOCK] [-n NS] IMAGE [CMD...]
  berth ps [-a] [-q] [--address SOCK] [-n NS]   (container commands: docker's flags, so --address only)
  berth exec [-i] [-t] [-e K=V]... [-w DIR] [-u UID[:GID]] CONTAINER CMD...
  berth logs [-f] CONTAINER
  berth stop [-t SECONDS] CONTAINER...
  berth rm [-f] CONTAINER...
  berth test                 (run by bin/berth: the whole test suite)`;

function say(msg: string): void {
  console.log(`berth: ${msg}`);
}

async function up(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string' },
      root: { type: 'string' },
      state: { type: 'string' },
      address: { type: 'string' },
      node: { type: 'string' },
      'nats-url': { type: 'string' },
      'nats-port': { type: 'string' },
    },
    strict: true,
  });
  if (values['nats-url'] && values['nats-port']) throw new Error('--nats-url and --nats-port exclude each other');
  const over: Partial<Config> = {};
  if (values.root) over.root = values.root;
  if (values.state) over.state = values.state;
  if (values.node) over.node = values.node;
  const { loadConfig } = await import('@berth/kit');
  const { startStack } = await import('./supervisor.js');
  const cfg = loadConfig(values.config, over);
  if (values.address) cfg.grpc.address = values.address;
  if (values['nats-url']) cfg.nats.url = values['nats-url'];
  if (values['nats-port']) {
    const port = Number(values['nats-port']);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--nats-port: not a port: ${values['nats-port']}`);
    cfg.nats.port = port;
  }
  const stack = await startStack(cfg, { log: say });
  say(`ready ${cfg.grpc.address}`);
  let stopping = false;
  const down = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    say(`${sig}: stopping`);
    await stack.stop();
    say('stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void down('SIGINT'));
  process.on('SIGTERM', () => void down('SIGTERM'));
}

// each command loads its own module only when it runs; run and exec exit with the process's status
const commands: Record<string, (args: string[]) => Promise<unknown>> = {
  up,
  events: async (a) => (await import('./events.js')).eventsCommand(a),
  pull: async (a) => (await import('./pull.js')).pullCommand(a),
  push: async (a) => (await import('./images.js')).pushCommand(a),
  export: async (a) => (await import('./images.js')).exportCommand(a),
  import: async (a) => (await import('./images.js')).importCommand(a),
  images: async (a) => (await import('./images.js')).imagesCommand(a),
  rmi: async (a) => (await import('./images.js')).rmiCommand(a),
  run: async (a) => process.exit(await (await import('./containers/run.js')).runCommand(a)),
  exec: async (a) => process.exit(await (await import('./containers/exec.js')).execCommand(a)),
  ps: async (a) => (await import('./containers/ps.js')).psCommand(a),
  logs: async (a) => (await import('./containers/logs.js')).logsCommand(a),
  stop: async (a) => (await import('./containers/stop.js')).stopCommand(a),
  rm: async (a) => (await import('./containers/rm.js')).rmCommand(a),
  'rm-on-exit': async (a) => (await import('./containers/rm.js')).rmOnExitCommand(a),
  gc: async (a) => (await import('./gc.js')).gcCommand(a),
};

const [cmd, ...rest] = process.argv.slice(2);
try {
  if (cmd !== undefined && Object.hasOwn(commands, cmd)) await commands[cmd]!(rest);
  else if (cmd === 'config' && rest[0] === 'default') {
    const { configToml, defaultConfig } = await import('@berth/kit');
    process.stdout.write(configToml(defaultConfig()));
  }
  else {
    console.error(usage);
    process.exit(2);
  }
} catch (err) {
  console.error(`berth: ${(err as Error).message}`);
  // docker's statuses where a command has them (run: 125 for its own failures, 126/127 to start)
  process.exit((err as { status?: number }).status ?? 1);
}
