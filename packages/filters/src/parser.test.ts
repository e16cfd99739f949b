import { test } from "node:test";
import assert from "node:assert/strict";
import { adaptFunc, adaptObject, always, FilterSyntaxError, parse, parseAll, type Adaptor } from "./index.js";

// A small corpus shaped like containerd objects and event envelopes.
const items = {
  exit: adaptObject({ namespace: "default", topic: "/tasks/exit", event: { container_id: "c1", exit_status: 0 } }),
  create: adaptObject({ namespace: "k8s.io", topic: "/containers/create", event: { id: "foobar" } }),
  labeled: adaptObject({
    name: "foo-1",
    labels: { "com.example": "x", "com.example.empty": "", tier: "web app" },
  }),
  other: adaptObject({ name: "bar", labels: { "com.example": "y" }, note: 'say "hi"\\' }),
};
type Name = keyof typeof items;

function matches(filter: string): Name[] {
  const f = parse(filter);
  return (Object.keys(items) as Name[]).filter((k) => f.match(items[k]));
}

function syntaxError(input: string, reason: RegExp | string, position?: number): void {
  assert.throws(
    () => parse(input),
    (err: unknown) => {
      assert.ok(err instanceof FilterSyntaxError, `expected FilterSyntaxError for ${input}`);
      assert.equal(err.input, input);
      if (typeof reason === "string") assert.equal(err.reason, reason);
      else assert.match(err.reason, reason);
      if (position !== undefined) assert.equal(err.position, position);
      assert.match(err.message, /^filters: parse error: \[/);
      return true;
    },
  );
}

test("equality on topics and namespaces", () => {
  assert.deepEqual(matches('topic=="/tasks/exit"'), ["exit"]);
  assert.deepEqual(matches("namespace==k8s.io"), ["create"]);
  assert.deepEqual(matches("event.container_id==c1"), ["exit"]);
  assert.deepEqual(matches("event.exit_status==0"), ["exit"]);
});

test("regexp match", () => {
  assert.deepEqual(matches('topic~="/containers/"'), ["create"]);
  assert.deepEqual(matches("topic~=/containers/"), ["create"], "slash-quoted regexp");
  assert.deepEqual(matches("topic~=|^/tasks/|"), ["exit"], "pipe-quoted regexp");
  assert.deepEqual(matches("name~=^foo"), ["labeled"]);
  assert.deepEqual(matches("name~=[0-9]$"), ["labeled"]);
  assert.deepEqual(matches("name~=(?i)^BAR"), ["other"], "leading RE2 flag group");
  assert.deepEqual(matches("name~=^\\:?bar"), ["other"], "RE2-style punctuation escape");
  // Absent fields are matched as "": containerd behaviour.
  assert.deepEqual(matches("name~=^$"), ["exit", "create"]);
});

test("conjunction with comma, quoted label keys", () => {
  assert.deepEqual(matches('labels."com.example"==x,name~=^foo'), ["labeled"]);
  assert.deepEqual(matches('labels."com.example"==y,name~=^foo'), []);
  // Map keys are the rest of the path joined by ".", so quoting is optional.
  assert.deepEqual(matches("labels.com.example==x"), ["labeled"]);
  assert.deepEqual(matches("name, labels.tier"), ["labeled"]);
});

test("presence selectors", () => {
  assert.deepEqual(matches("labels"), [], "a map itself is not a value");
  assert.deepEqual(matches('labels."com.example"'), ["labeled", "other"]);
  assert.deepEqual(matches('labels."com.example.empty"'), ["labeled"], "empty map entry is present");
  assert.deepEqual(matches("event"), []);
  assert.deepEqual(matches("event.id"), ["create"]);
  assert.deepEqual(matches("missing"), []);
});

test("inequality treats absent as empty", () => {
  assert.deepEqual(matches("name!=bar"), ["exit", "create", "labeled"]);
  assert.deepEqual(matches('labels."com.example"!=x'), ["exit", "create", "other"]);
  assert.deepEqual(matches('name!=""'), ["labeled", "other"]);
});

test("quoted values with spaces and escapes", () => {
  assert.deepEqual(matches('labels.tier=="web app"'), ["labeled"]);
  assert.deepEqual(matches('note=="say \\"hi\\"\\\\"'), ["other"]);
  const f = parse('v=="\\t\\x41\\101\\u00e9\\U0001F600\\xc3\\xa9"');
  assert.ok(f.match(adaptFunc(() => "\tAAé😀é")));
  assert.ok(parse('"quoted field"==1').match(adaptFunc((p) => (p[0] === "quoted field" ? "1" : undefined))));
  // Bare values run to the next comma or space and keep punctuation.
  assert.ok(parse("v==omg_asdf.asdf-qwer").match(adaptFunc(() => "omg_asdf.asdf-qwer")));
  assert.ok(parse("v==é/ü").match(adaptFunc(() => "é/ü")));
});

test("whitespace around tokens", () => {
  assert.deepEqual(matches(" namespace == k8s.io "), ["create"]);
  assert.deepEqual(matches("name ,labels.tier"), ["labeled"]);
});

test("| separates OR groups where containerd has no meaning for it", () => {
  assert.deepEqual(matches("event.id|labels.tier"), ["create", "labeled"]);
  assert.deepEqual(matches('topic=="/tasks/exit"|namespace=="k8s.io"'), ["exit", "create"]);
  assert.deepEqual(matches('name,labels.tier|topic=="/tasks/exit"'), ["exit", "labeled"]);
  assert.deepEqual(matches("topic~=|exit||namespace==k8s.io"), ["exit", "create"]);
  // A bare value keeps the `|`, exactly as containerd reads it.
  const f = parse("v==a|b");
  assert.ok(f.match(adaptFunc(() => "a|b")));
  assert.ok(!f.match(adaptFunc(() => "a")));
});

test("parseAll ORs filters; empty inputs match everything", () => {
  const f = parseAll(['topic=="/tasks/exit"', "namespace==k8s.io"]);
  assert.ok(f.match(items.exit));
  assert.ok(f.match(items.create));
  assert.ok(!f.match(items.other));
  assert.equal(parseAll([]), always);
  assert.equal(parse(""), always);
  assert.ok(parseAll(["name==nope", ""]).match(items.other), "an empty filter in the list matches all");
  assert.throws(() => parseAll(["name==x", "name=="]), FilterSyntaxError);
});

test("syntax errors", () => {
  syntaxError('labels."unterminated==x', "quoted literal not terminated", 7);
  syntaxError("labels.key==/value", "quoted literal not terminated", 12);
  syntaxError("labels.ns/key==value", "quoted literal not terminated", 9);
  syntaxError('a=="line\nbreak"', "quoted literal not terminated", 3);
  syntaxError("name==", "expected value or quoted", 6);
  syntaxError("image~=,id==x", "expected value or quoted", 7);
  syntaxError("a== .b", "expected value or quoted", 4);
  syntaxError("name==foo,", "expected field or quoted", 10);
  syntaxError("labels.", "expected field or quoted", 7);
  syntaxError("==x", "expected field or quoted", 0);
  syntaxError("a|", "expected field or quoted", 2);
  syntaxError("   ", "expected field or quoted", 3);
  syntaxError("name=", 'unsupported operator "="', 4);
  syntaxError("name=~x", 'unsupported operator "=~"', 4);
  syntaxError("name==!x", 'unsupported operator "==!"', 4);
  syntaxError("name-x", 'expected an operator ("=="|"!="|"~=")', 4);
  syntaxError('a"x"==y', 'expected an operator ("=="|"!="|"~=")', 1);
  syntaxError("labels.|foo|==x", "invalid quote encountered", 7);
  syntaxError("topic==/tasks/exit", "invalid quote encountered", 7);
  syntaxError('a=="x"b', "unexpected input: b", 6);
  syntaxError('a=="\\q"', "illegal escape sequence", 4);
  syntaxError('a=="\\x4"', "illegal numeric escape sequence", 4);
  syntaxError('a=="\\400"', "octal escape out of range", 4);
  syntaxError('a=="\\U00110000"', "escaped code point out of range", 4);
  syntaxError("name~=[abc", "error parsing regexp: missing closing ]: `[abc`", 6);
  syntaxError("name~=/(/", "error parsing regexp: missing closing ): `(`", 6);
  syntaxError("a==b\0", "unexpected input: \0", 4);
});

test("error message marks the offending character", () => {
  assert.throws(() => parse("image~=,id==x"), {
    name: "FilterSyntaxError",
    message: "filters: parse error: [image~= >|,|< id==x]: expected value or quoted",
  });
  assert.throws(() => parse("name==foo,"), {
    message: "filters: parse error: [name==foo,]: expected field or quoted",
  });
});

test("custom adaptors see the parsed field path", () => {
  const seen: string[][] = [];
  const a: Adaptor = { field: (p) => (seen.push(p), p.join("/")) };
  assert.ok(parse('labels."a.b".c==labels/a.b/c').match(a));
  assert.deepEqual(seen, [["labels", "a.b", "c"]]);
});
