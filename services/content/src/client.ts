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


export const ingestFileMethod = 'IngestFile';

export interface IngestFile {
  /** the ingest's data file: append to it, then commit with a Write (ref, COMMIT) */
  path: string;
  /** bytes already there (resume from here) */
  offset: number;
  /** the namespace may take another namespace's blob: nothing to write, only commit */
  shared: boolean;
}

/**
 * Opens (or resumes) the ingest `ref` in `ctx.namespace` under `ctx.lease` and tells where its
 * data file is, for a writer on this node that appends to it directly instead of streaming the
 * bytes over NATS. AlreadyExists when the namespace has `expected` already.
 */
export async function ingestFile(bus: BusClient, node: string, ref: string, total: number, expected: string, ctx: CallContext): Promise<IngestFile> {
  const res = await bus.unary(rpcSubject(node, 'content', ingestFileMethod), Buffer.from(JSON.stringify({ ref, total, expected })), ctx);
  return JSON.parse(Buffer.from(res).toString('utf8')) as IngestFile;
}
