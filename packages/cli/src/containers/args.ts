// docker's command lines: the command's own flags come before the image (or container), and
// everything after it is the container's command, flags included (`run busybox sh -c 'x'`).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CommandError } from '../grpc.js';

type Options = NonNullable<ParseArgsConfig['options']>;
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>>['values'];

/** Splits at the first operand, knowing which flags take a value; then parses the flags strictly. */
export function parseLeading<O extends Options>(args: string[], options: O, usage: string): { values: Parsed<O>; rest: string[] } {
  const takesValue = (name: string) => Object.entries(options).some(([long, o]) => o.type === 'string' && (long === name || o.short === name));
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (!a.startsWith('-') || a === '-') break;
    if (a.startsWith('--')) {
      if (!a.includes('=') && takesValue(a.slice(2))) i++;
      continue;
    }
    // -it, -e K=V, -eK=V: a short flag that takes a value ends the cluster
    for (let j = 1; j < a.length; j++) {
      if (takesValue(a[j]!)) {
        if (j === a.length - 1) i++;
        break;
      }
    }
  }
  const head = args.slice(0, i);
  const rest = args[i] === '--' ? args.slice(i + 1) : args.slice(i);
  try {
    const { values } = parseArgs({ args: head, options, strict: true, allowPositionals: false });
    return { values, rest };
  } catch (e) {
    throw new CommandError(`${(e as Error).message}\n${usage}`, 125);
  }
}
