// containerd's rules for names (identifiers.Validate) and labels (labels.Validate), in our words.
import { invalidArgument } from '@berth/errdefs';

const maxIdentifier = 76;
const identifier = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const identifierPattern = '^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$';

export function validateIdentifier(s: string): void {
  if (s === '') throw invalidArgument('identifier must not be empty');
  if (s.length > maxIdentifier) throw invalidArgument(`identifier "${s}" greater than maximum length (${maxIdentifier} characters)`);
  if (!identifier.test(s)) throw invalidArgument(`identifier "${s}" must match ${identifierPattern}`);
}

const maxLabel = 4096;

export function validateLabel(key: string, value: string): void {
  if (Buffer.byteLength(key) + Buffer.byteLength(value) > maxLabel) {
    // containerd names only the key's first 10 bytes in this message
    throw invalidArgument(`label key and value greater than maximum size (${maxLabel} bytes), key: ${Buffer.from(key).subarray(0, 10).toString()}`);
  }
}
export * from './digest.js';
export * from './reference.js';
