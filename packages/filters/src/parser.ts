import { all, always, any, Selector, type Filter, type Operator } from "./filter.js";
import { compilePattern } from "./regexp.js";
import { isFieldChar, isOperatorChar, isQuoteChar, isValueChar, Scanner } from "./scanner.js";

/*
 * Grammar (containerd 1.6, plus the `|` extension described below):
 *
 *   filter    := group ("|" group)*
 *   group     := selector ("," selector)*
 *   selector  := fieldpath [operator value]
 *   fieldpath := field ("." field)*
 *   field     := [A-Za-z0-9_]+ | "quoted"
 *   operator  := "==" | "!=" | "~="
 *   value     := quoted | bare            (after ~=, /re/ and |re| also quote)
 *
 * `|` as OR is not containerd syntax. It is only recognised where containerd
 * would reject the input (right after a presence selector or a quoted
 * value), so every string containerd accepts keeps its meaning. In
 * particular a bare value swallows `|`: `name==a|b` compares with "a|b".
 *
 * Whitespace is skipped before every token. containerd only skips it before
 * fields, operators and values (so it rejects `a ,b` and trailing spaces);
 * being more lenient there changes no accepted filter.
 */

/** Parse one filter string. The empty string matches everything. */
export function parse(input: string): Filter {
  if (input === "") return always;
  return new Parser(input).filter();
}

/**
 * Parse the filter list of an API request: the result matches when any
 * filter matches, and an empty list matches everything.
 */
export function parseAll(inputs: readonly string[]): Filter {
  if (inputs.length === 0) return always;
  return any(inputs.map(parse));
}

class Parser {
  private readonly s: Scanner;

  constructor(input: string) {
    this.s = new Scanner(input);
  }

  filter(): Filter {
    const groups: Filter[] = [];
    let group: Filter[] = [this.selector()];
    for (;;) {
      this.s.skipSpace();
      const c = this.s.peek();
      if (c === "") break;
      if (c === ",") {
        this.s.next();
        group.push(this.selector());
      } else if (c === "|") {
        this.s.next();
        groups.push(all(group));
        group = [this.selector()];
      } else {
        throw this.s.error(`unexpected input: ${c}`);
      }
    }
    groups.push(all(group));
    return groups.length === 1 ? groups[0]! : any(groups);
  }

  private selector(): Selector {
    const path = this.fieldPath();
    this.s.skipSpace();
    const c = this.s.peek();
    if (c === "" || c === "," || c === "|") return new Selector(path, "present");

    const op = this.operator();
    const { value, start } = this.value(op);
    if (op !== "~=") return new Selector(path, op, value);
    // containerd compiles lazily and silently never matches on a bad pattern;
    // rejecting it up front gives the caller an InvalidArgument instead, and
    // compiles once per filter rather than once per event.
    try {
      return new Selector(path, op, value, compilePattern(value));
    } catch (err) {
      // The engine words its errors as Go's regexp.Compile does.
      throw this.s.error((err as Error).message, start);
    }
  }

  private fieldPath(): string[] {
    const path = [this.field()];
    for (;;) {
      this.s.skipSpace();
      if (this.s.peek() !== ".") return path;
      this.s.next();
      path.push(this.field());
    }
  }

  private field(): string {
    this.s.skipSpace();
    const start = this.s.pos;
    const c = this.s.peek();
    if (isFieldChar(c)) return this.s.take(isFieldChar);
    if (isQuoteChar(c)) {
      const q = this.s.quoted();
      if (q.delim !== '"') throw this.s.error("invalid quote encountered", start);
      return q.value;
    }
    throw this.s.error("expected field or quoted", start);
  }

  private operator(): Exclude<Operator, "present"> {
    this.s.skipSpace();
    const start = this.s.pos;
    const op = this.s.take(isOperatorChar);
    if (op === "==" || op === "!=" || op === "~=") return op;
    if (op === "") {
      // Reading a stray quote first reports an unterminated one as such
      // (`labels.ns/key==v`), which is what containerd tells users.
      if (isQuoteChar(this.s.peek())) this.s.quoted();
      throw this.s.error('expected an operator ("=="|"!="|"~=")', start);
    }
    throw this.s.error(`unsupported operator ${JSON.stringify(op)}`, start);
  }

  private value(op: Operator): { value: string; start: number } {
    this.s.skipSpace();
    const start = this.s.pos;
    const c = this.s.peek();
    if (isQuoteChar(c)) {
      const q = this.s.quoted();
      if (q.delim !== '"' && op !== "~=") throw this.s.error("invalid quote encountered", start);
      return { value: q.value, start };
    }
    if (c === "\0") throw this.s.error("unexpected null", start);
    // Separators and operator characters cannot start a bare value, otherwise
    // `a==,b` would silently compare against ",b".
    if (c === "" || c === "," || c === "." || isOperatorChar(c)) {
      throw this.s.error("expected value or quoted", start);
    }
    this.s.next(); // like containerd, the first character is taken as-is
    this.s.take(isValueChar);
    return { value: this.s.input.slice(start, this.s.pos), start };
  }
}
