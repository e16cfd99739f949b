// For other Berth services on the same node: where a committed blob's file is, so it can be
// read straight from disk instead of streamed over NATS (see README "The fast path").
import { BusClient, rpcSubject, type CallContext } from '@berth/bus';

export const blobPathMethod = 'BlobPath';

export interface BlobFile {
  digest: string;
  /** absolute path of the committed, read-only file */
  path: string;
  size: number;
}

/**
 * Asks this node's content service for the file of `digest` as `ctx.namespace` sees it.
 * Fails with NotFound when the namespace has no such content (the same answer Info gives),
 * Unavailable when no content service runs on the node.
 */
export async function blobFile(bus: BusClient, node: string, digest: string, ctx: CallContext): Promise<BlobFile> {
  const res = await bus.unary(rpcSubject(node, 'content', blobPathMethod), Buffer.from(JSON.stringify({ digest })), ctx);
  return JSON.parse(Buffer.from(res).toString('utf8')) as BlobFile;
}

