// containerd's checks on what may be published (events/exchange): a topic is `/` followed by
// identifier components; a forwarded envelope needs a valid namespace and a timestamp.
import { invalidArgument, toBerthError } from '@berth/errdefs';
import { validateIdentifier } from '@berth/identifiers';
import { namespaceRequired, type Envelope } from '@berth/bus';

export function validateTopic(topic: string): void {
  if (topic === '') throw invalidArgument('must not be empty');
  if (topic[0] !== '/') throw invalidArgument("must start with '/'");
  if (topic.length === 1) throw invalidArgument('must have at least one component');
  for (const c of topic.slice(1).split('/')) {
    try {
      validateIdentifier(c);
    } catch (e) {
      throw toBerthError(e).wrap(`failed validation on component "${c}"`);
    }
  }
}

export function validateEnvelope(e: Envelope): void {
  try {
    validateIdentifier(e.namespace);
  } catch (err) {
    throw toBerthError(err).wrap('event envelope has invalid namespace');
  }
  try {
    validateTopic(e.topic);
  } catch (err) {
    throw toBerthError(err).wrap(`envelope topic "${e.topic}"`);
  }
  if (!e.timestamp || (!Number(e.timestamp.seconds) && !e.timestamp.nanos)) {
    throw invalidArgument('timestamp must be set on forwarded event');
  }
}

/** containerd's Publish: the namespace comes from the call's context and must be valid. */
export function requireNamespace(ns: string | undefined): string {
  const namespace = namespaceRequired({ namespace: ns });
  validateIdentifier(namespace);
  return namespace;
}
