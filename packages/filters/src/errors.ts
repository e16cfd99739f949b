import { BerthError, Code } from "@berth/errdefs";

/**
 * Thrown for any malformed filter string: an InvalidArgument error, as containerd answers a
 * malformed filter, so callers pass it on unchanged. The message mirrors containerd's layout
 * (`filters: parse error: [before >|x|< after]: reason`) to keep client-side
 * error text familiar.
 */
export class FilterSyntaxError extends BerthError {

  constructor(
    /** The whole filter string that failed to parse. */
    readonly input: string,
    /** UTF-16 offset into `input` where the problem was detected. */
    readonly position: number,
    /** Short description without the location prefix. */
    readonly reason: string,
  ) {
    super(Code.InvalidArgument, `filters: parse error: ${locate(input, position)}: ${reason}`);
    this.name = "FilterSyntaxError";
  }
}

function locate(input: string, pos: number): string {
  if (pos >= input.length) return `[${input}]`;
  const ch = String.fromCodePoint(input.codePointAt(pos)!);
  return `[${input.slice(0, pos)} >|${ch}|< ${input.slice(pos + ch.length)}]`;
}
