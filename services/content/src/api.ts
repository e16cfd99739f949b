// containerd's Content API over the library: what services/content/contentserver does in
// containerd 1.6 (request validation and its messages, Read's range rules and chunking, List's
// batches, Write's action loop). Messages in and out are the decoded protobuf objects (proto
// field names); no NATS here, so every rule is testable by calling these functions.
import type { Timestamp } from '@berth/api';
import { BerthError, Code } from '@berth/errdefs';
import type { Info__Output as InfoMsg } from '@berth/api/types/containerd/services/content/v1/Info.js';
import type { WriteContentRequest__Output as WriteReq } from '@berth/api/types/containerd/services/content/v1/WriteContentRequest.js';
import type { WriteContentResponse__Output as WriteRes } from '@berth/api/types/containerd/services/content/v1/WriteContentResponse.js';
import type { ReadContentRequest__Output as ReadReq } from '@berth/api/types/containerd/services/content/v1/ReadContentRequest.js';
import type { ReadContentResponse as ReadRes } from '@berth/api/types/containerd/services/content/v1/ReadContentResponse.js';
import type { Status__Output as StatusMsg } from '@berth/api/types/containerd/services/content/v1/Status.js';
import type { UpdateRequest__Output as UpdateReq } from '@berth/api/types/containerd/services/content/v1/UpdateRequest.js';
import { digestProblem } from './digest.js';
import { readRange } from './range.js';
import type { Content, Ctx, Info, Status } from './local.js';

/** List answers in messages of this many infos, like containerd. */
export const listBatch = 100;

export type Send<T> = (msg: T) => Promise<void>;
export interface StreamCtx extends Ctx {
  signal?: AbortSignal;
}

const ts = (t: Timestamp) => ({ seconds: t.seconds, nanos: t.nanos });

export function infoMessage(i: Info): InfoMsg {
  return { digest: i.digest, size: i.size, created_at: ts(i.createdAt), updated_at: ts(i.updatedAt), labels: i.labels };
}

export function statusMessage(s: Status): StatusMsg {
  return { ref: s.ref, offset: s.offset, total: s.total, expected: s.expected, started_at: ts(s.startedAt), updated_at: ts(s.updatedAt) };
}

/** Go's %q for the strings we quote (digests, refs). */
const q = (s: string) => JSON.stringify(s);

export class ContentApi {
  constructor(readonly content: Content) {}

  async info(req: { digest: string }, ctx: Ctx): Promise<{ info: InfoMsg }> {
    if (digestProblem(req.digest)) throw new BerthError(Code.InvalidArgument, `${q(req.digest)} failed validation`);
    return { info: infoMessage(await this.content.info(ctx, req.digest)) };
  }

  async update(req: UpdateReq, ctx: Ctx): Promise<{ info: InfoMsg }> {
    const digest = req.info?.digest ?? '';
    if (digestProblem(digest)) throw new BerthError(Code.InvalidArgument, `${q(digest)} failed validation`);
    const info = await this.content.update(ctx, { digest, labels: req.info?.labels ?? {} }, req.update_mask?.paths ?? []);
    return { info: infoMessage(info) };
  }

  /** Everything matching, sent in batches; the list carries no updated_at (containerd's List leaves it out). */
  async list(req: { filters: string[] }, ctx: StreamCtx, send: Send<{ info: Partial<InfoMsg>[] }>): Promise<void> {
    let batch: Partial<InfoMsg>[] = [];
    for await (const i of this.content.list(ctx, req.filters ?? [])) {
      ctx.signal?.throwIfAborted();
      batch.push({ digest: i.digest, size: i.size, created_at: ts(i.createdAt), labels: i.labels });
      if (batch.length >= listBatch) {
        await send({ info: batch });
        batch = [];
      }
    }
    if (batch.length) await send({ info: batch });
  }

  async delete(req: { digest: string }, ctx: Ctx): Promise<Record<string, never>> {
    const problem = digestProblem(req.digest);
    if (problem) throw new BerthError(Code.InvalidArgument, problem);
    await this.content.delete(ctx, req.digest);
    return {};
  }

  /**
   * Streams `size` bytes from `offset` (to the end when size is 0 or reaches past it) in chunks
   * of at most 1 MiB, each sent only when the reader has room. As in containerd, the offsets in
   * the responses count from the start of the read, not of the blob.
   */
  async read(req: ReadReq, ctx: StreamCtx, send: Send<ReadRes>): Promise<void> {
    const problem = digestProblem(req.digest);
    if (problem) throw new BerthError(Code.InvalidArgument, `${req.digest}: ${problem}`);
    const blob = await this.content.reader(ctx, req.digest);
    const { offset, length: size } = readRange(req.offset, req.size, blob.size);
    let sent = 0;
    for await (const data of blob.read(offset, size, ctx.signal)) {
      await send({ offset: sent, data });
      sent += data.length;
    }
  }

  async status(req: { ref: string }, ctx: Ctx): Promise<{ status: StatusMsg }> {
    try {
      return { status: statusMessage(await this.content.status(ctx, req.ref)) };
    } catch (err) {
      if (err instanceof BerthError) throw err.wrap(`could not get status for ref ${q(req.ref)}`);
      throw err;
    }
  }

  async listStatuses(req: { filters: string[] }, ctx: Ctx): Promise<{ statuses: StatusMsg[] }> {
    return { statuses: (await this.content.listStatuses(ctx, req.filters ?? [])).map(statusMessage) };
  }

  async abort(req: { ref: string }, ctx: Ctx): Promise<Record<string, never>> {
    await this.content.abort(ctx, req.ref);
    return {};
  }

  /**
   * The Write stream, action by action as containerd runs it. The first message names the ref
   * and opens (or resumes) the ingest; each message then gets one answer with the offset after
   * it. STAT reports progress; WRITE appends at the current offset (an offset of 0 on a started
   * ingest starts it over, any other offset must be the current one); COMMIT writes its data,
   * verifies size and digest and ends the stream. An expected digest the namespace already has
   * aborts the ingest with AlreadyExists. The ingest stays (resumable) whenever the stream ends
   * without a commit. After a clean end the last answer is sent once more, as containerd does.
   */
  async write(ctx: StreamCtx, requests: AsyncIterable<WriteReq>, send: Send<Partial<WriteRes>>): Promise<void> {
    const it = requests[Symbol.asyncIterator]();
    let next = await it.next();
    if (next.done) throw new BerthError(Code.Unknown, 'EOF');
    let req = next.value;
    const ref = req.ref;
    if (!ref) throw new BerthError(Code.InvalidArgument, 'first message must have a reference');
    let total = req.total;
    let expected = req.expected;
    const wr = await this.content.writer(ctx, ref, total, expected);
    // one answer object for the whole stream: fields set by one action stay in later answers
    const msg: Partial<WriteRes> = { action: req.action, offset: 0, total: 0, digest: '' };
    try {
      for (;;) {
        ctx.signal?.throwIfAborted();
        msg.action = req.action;
        const ws = wr.status();
        msg.offset = ws.offset;
        if (req.expected) {
          expected = req.expected;
          if (await this.content.exists(ctx, req.expected)) {
            await wr.close();
            await this.content.abort(ctx, ref).catch(() => undefined);
            throw new BerthError(Code.AlreadyExists, `blob with expected digest ${req.expected} exists`);
          }
        }
        if (req.total > 0) total = req.total;
        switch (req.action) {
          case 'STAT':
            msg.digest = wr.digest();
            msg.started_at = ts(ws.startedAt);
            msg.updated_at = ts(ws.updatedAt);
            msg.total = total;
            break;
          case 'WRITE':
          case 'COMMIT': {
            if (req.offset > 0 && req.offset !== ws.offset) {
              throw new BerthError(Code.OutOfRange, `write @${req.offset} must occur at current offset ${ws.offset}`);
            }
            if (req.offset === 0 && ws.offset > 0) {
              await wr.truncate(0);
              msg.offset = 0;
            }
            const data = req.data;
            if (data && data.length > 0) {
              const n = await wr.write(data);
              if (n !== data.length) throw new BerthError(Code.DataLoss, `wrote ${n} of ${data.length} bytes`);
              msg.offset = (msg.offset ?? 0) + n;
            }
            if (req.action === 'COMMIT') {
              const labels = req.labels && Object.keys(req.labels).length ? req.labels : undefined;
              await wr.commit(total, expected, labels);
            }
            msg.digest = wr.digest();
            break;
          }
        }
        await send({ ...msg });
        if (req.action === 'COMMIT') break;
        next = await it.next();
        if (next.done) break;
        req = next.value;
      }
      await send({ ...msg });
    } finally {
      await wr.close();
    }
  }
}
