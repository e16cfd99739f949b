// What travels in NATS headers beside the protobuf payload. On the gRPC side the same values
// arrive as metadata (containerd-namespace, containerd-lease, traceparent, tracestate).
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';
import { failedPrecondition, toBerthError } from '@berth/errdefs';
import { validateIdentifier } from '@berth/identifiers';

export const H = {
  namespace: 'containerd-namespace',
  lease: 'containerd-lease',
  traceparent: 'traceparent',
  tracestate: 'tracestate',
  /** absolute deadline, ms since the epoch */
  deadline: 'berth-deadline',
  /** status of a failed call: gRPC code and message (the micro service API's own headers) */
  errorCode: 'Nats-Service-Error-Code',
  errorMessage: 'Nats-Service-Error',
  /**
   * streams: the sender's inbox, its receive window, the control frame kind, how many data
   * frames the sender has sent (ping, end) and how many it may send in all (credit, ping)
   */
  inbox: 'berth-inbox',
  window: 'berth-window',
  ctl: 'berth-ctl',
  n: 'berth-n',
  credit: 'berth-credit',
  node: 'berth-node',
  /** ms between the liveness beats the sender wants while a call or stream runs */
  liveness: 'berth-liveness',
  /** streams: the sender takes data frames that carry several messages (channel.ts) */
  batch: 'berth-batch',
  /** Tasks.Create: its container's record as the caller holds it (CallContext.container) */
  container: 'berth-container',
} as const;

/** Per-call context: what containerd keeps in its context.Context. */
export interface CallContext {
  namespace?: string;
  lease?: string;
  traceparent?: string;
  tracestate?: string;
  /** absolute deadline in ms since the epoch */
  deadline?: number;
  /** the caller gave up: a call in flight is cancelled at the service too (never sent as a header) */
  signal?: AbortSignal;
  /**
   * Tasks.Create: the answer of Containers.Get for its container, base64, as the gateway's read
   * cache holds it (services/gateway/src/carry.ts), so the tasks service need not ask for it.
   * Only the gateway sets it (gRPC metadata never becomes it).
   */
  container?: string;
  /**
   * Set by a read's handler whose answer comes from one record alone: that record's store key,
   * so the gateway keeps its copy until that record changes, not until any does (changes.ts).
   * Never sent as a header.
   */
  readsRecord?: string;
}

const contextKeys = [
  ['namespace', H.namespace],
  ['lease', H.lease],
  ['traceparent', H.traceparent],
  ['tracestate', H.tracestate],
  ['container', H.container],
] as const;

export function contextHeaders(ctx: CallContext = {}, into: MsgHdrs = natsHeaders()): MsgHdrs {
  for (const [k, h] of contextKeys) {
    const v = ctx[k];
    if (v) into.set(h, v);
  }
  if (ctx.deadline !== undefined) into.set(H.deadline, String(Math.floor(ctx.deadline)));
  return into;
}

/** Whether a call's headers would say nothing but its namespace (the ones a client may encode once). */
export function namespaceOnly(ctx: CallContext): boolean {
  for (const [k] of contextKeys) if (k !== 'namespace' && ctx[k]) return false;
  return ctx.deadline === undefined;
}

export function contextFrom(h: MsgHdrs | undefined): CallContext {
  const ctx: CallContext = {};
  if (!h) return ctx;
  for (const [k, name] of contextKeys) {
    const v = h.get(name);
    if (v) ctx[k] = v;
  }
  const d = h.get(H.deadline);
  if (d) ctx.deadline = Number(d);
  return ctx;
}

export { natsHeaders as headers };

/**
 * The call's namespace, required and valid: the one check every service makes (a namespace
 * becomes part of store keys and subjects, so `a/b` or `..` must never get that far).
 */
export function namespaceRequired(ctx: { namespace?: string }): string {
  if (!ctx.namespace) throw failedPrecondition('namespace is required');
  try {
    validateIdentifier(ctx.namespace);
  } catch (e) {
    throw toBerthError(e).wrap('namespace validation');
  }
  return ctx.namespace;
}
