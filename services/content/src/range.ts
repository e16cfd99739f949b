// containerd's rule for what a content Read covers, in one place: the content service's Read and
// the gateway's read from the blob's file must answer a range alike.
import { BerthError, Code } from '@berth/errdefs';

/** From `offset` (0 when negative), `size` bytes, or to the end when 0 or past it. */
export function readRange(offset: number, size: number, blobSize: number): { offset: number; length: number } {
  offset = Math.max(0, offset);
  if (offset > blobSize) throw new BerthError(Code.OutOfRange, `read past object length ${blobSize} bytes`);
  if (size <= 0 || offset + size > blobSize) size = blobSize - offset;
  return { offset, length: size };
}
