import { FilterSyntaxError } from "./errors.js";

// Character classes follow containerd's scanner: field names are ASCII only,
// while bare values accept any printable non-space rune except ','.
const FIELD = /^[A-Za-z0-9_]$/;
const SPACE = /^\p{White_Space}$/u;
const VALUE = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;

export const isFieldChar = (c: string): boolean => FIELD.test(c);
export const isOperatorChar = (c: string): boolean => c === "=" || c === "!" || c === "~";
/** `/` and `|` delimit regexps; only `"` is accepted outside `~=` values. */
export const isQuoteChar = (c: string): boolean => c === '"' || c === "/" || c === "|";
export const isValueChar = (c: string): boolean => c !== "," && VALUE.test(c);

const SIMPLE_ESCAPES: Record<string, number> = {
  a: 0x07, b: 0x08, f: 0x0c, n: 0x0a, r: 0x0d, t: 0x09, v: 0x0b, "\\": 0x5c,
};
const NUMERIC_ESCAPES: Record<string, { digits: number; radix: number }> = {
  "0": { digits: 3, radix: 8 }, "1": { digits: 3, radix: 8 }, "2": { digits: 3, radix: 8 },
  "3": { digits: 3, radix: 8 }, "4": { digits: 3, radix: 8 }, "5": { digits: 3, radix: 8 },
  "6": { digits: 3, radix: 8 }, "7": { digits: 3, radix: 8 },
  x: { digits: 2, radix: 16 }, u: { digits: 4, radix: 16 }, U: { digits: 8, radix: 16 },
};

/**
 * A cursor over the filter string. The parser drives it with context (it
 * knows whether a field, operator or value comes next), which replaces the
 * mode flag containerd's scanner carries.
 */
export class Scanner {
  pos = 0;

  constructor(readonly input: string) {}

  /** The code point at the cursor, or "" at the end of input. */
  peek(): string {
    const cp = this.input.codePointAt(this.pos);
    return cp === undefined ? "" : String.fromCodePoint(cp);
  }

  next(): string {
    const c = this.peek();
    this.pos += c.length;
    return c;
  }

  skipSpace(): void {
    while (SPACE.test(this.peek())) this.next();
  }

  /** Consume the longest run of characters satisfying `pred`. */
  take(pred: (c: string) => boolean): string {
    const start = this.pos;
    while (this.pos < this.input.length && pred(this.peek())) this.next();
    return this.input.slice(start, this.pos);
  }

  error(reason: string, pos = this.pos): FilterSyntaxError {
    return new FilterSyntaxError(this.input, pos, reason);
  }

  /**
   * Read a quoted literal starting at the cursor, using Go string-literal
   * escapes with the opening character as the delimiter. Escapes are decoded
   * to bytes first because Go's `\x` and octal escapes denote raw bytes, so
   * e.g. "\xc3\xa9" must come out as "é".
   */
  quoted(): { delim: string; value: string } {
    const start = this.pos;
    const delim = this.next();
    const bytes: number[] = [];
    const utf8 = new TextEncoder();
    for (;;) {
      const at = this.pos;
      const c = this.next();
      if (c === "" || c === "\n") throw this.error("quoted literal not terminated", start);
      if (c === "\0") throw this.error("unexpected null", at);
      if (c === delim) break;
      if (c !== "\\") {
        bytes.push(...utf8.encode(c));
        continue;
      }
      const e = this.next();
      if (e === delim) {
        bytes.push(e.charCodeAt(0));
      } else if (e in SIMPLE_ESCAPES) {
        bytes.push(SIMPLE_ESCAPES[e]!);
      } else if (e in NUMERIC_ESCAPES) {
        const { digits, radix } = NUMERIC_ESCAPES[e]!;
        // Octal escapes include their first digit; the others start after the letter.
        const begin = radix === 8 ? at + 1 : this.pos;
        const text = this.input.slice(begin, begin + digits);
        const ok = text.length === digits && [...text].every((d) => !Number.isNaN(parseInt(d, radix)));
        if (!ok) throw this.error("illegal numeric escape sequence", at);
        const v = parseInt(text, radix);
        this.pos = begin + digits;
        if (e === "u" || e === "U") {
          if (v > 0x10ffff) throw this.error("escaped code point out of range", at);
          // Lone surrogates encode as U+FFFD, as Go's UTF-8 encoder does.
          bytes.push(...utf8.encode(String.fromCodePoint(v)));
        } else {
          if (v > 0xff) throw this.error("octal escape out of range", at);
          bytes.push(v);
        }
      } else {
        throw this.error("illegal escape sequence", at);
      }
    }
    return { delim, value: new TextDecoder().decode(Uint8Array.from(bytes)) };
  }
}
