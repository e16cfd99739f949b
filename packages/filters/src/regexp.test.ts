import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { Code } from "@berth/errdefs";
import { adaptObject, FilterSyntaxError, parse } from "./index.js";

const matches = (filter: string, value: string) => parse(filter).match(adaptObject({ name: value }));

function refused(pattern: string, reason: string): void {
  const input = `name~=${JSON.stringify(pattern)}`;
  assert.throws(
    () => parse(input),
    (err: unknown) => {
      assert.ok(err instanceof FilterSyntaxError, `expected FilterSyntaxError for ${input}`);
      assert.equal(err.code, Code.InvalidArgument);
      assert.equal(err.reason, reason);
      return true;
    },
  );
}

test("a pathological pattern finishes: the engine does not backtrack", () => {
  // A backtracking engine (JS RegExp) takes longer than the age of the universe on this
  // input, so the child is killed at the bound and the test fails; RE2 answers at once.
  const code = `
    import { parse, adaptObject } from ${JSON.stringify(new URL("./index.js", import.meta.url).href)};
    const f = parse('name~="^(a+)+$"');
    const hostile = adaptObject({ name: "a".repeat(10000) + "b" });
    const fine = adaptObject({ name: "a".repeat(10000) });
    let hits = 0;
    for (let i = 0; i < 20; i++) hits += Number(f.match(hostile)) + Number(f.match(fine));
    process.stdout.write(String(hits));
  `;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], { timeout: 30_000, encoding: "utf8" });
  assert.equal(r.signal, null, "the match did not finish within the bound");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, "20", "only the all-a input matches");
});

test("RE2 syntax that JS RegExp lacks", () => {
  assert.ok(matches("name~=(?P<word>^ab)", "abc"), "Go-style named group");
  assert.ok(matches("name~=^[[:alpha:]]+$", "abc"), "POSIX class");
  assert.ok(!matches("name~=^[[:alpha:]]+$", "ab1"));
  assert.ok(matches('name~="^\\\\pL+$"', "héllo"), "Unicode class without braces");
  assert.ok(matches('name~="^\\\\Qa.b\\\\E$"', "a.b"), "\\Q...\\E literal");
  assert.ok(!matches('name~="^\\\\Qa.b\\\\E$"', "axb"));
  assert.ok(matches('name~="^a\\\\z"', "a"), "\\z end of text");
  assert.ok(matches('name~="(?U)^a+"', "aaa"), "ungreedy flag still matches");
  assert.ok(matches('name~="(?s)^a.b$"', "a\nb"), "dot matches newline under (?s)");
  assert.ok(!matches('name~="^a.b$"', "a\nb"), "but not by default");
  assert.ok(matches("name~=^.$", "😀"), "dot is one code point");
});

test("matching is unanchored, like Go's MatchString", () => {
  assert.ok(matches("name~=b", "abc"));
  assert.ok(!matches("name~=^b", "abc"));
});

test("patterns outside RE2 are InvalidArgument with Go's regexp error text", () => {
  refused("(", "error parsing regexp: missing closing ): `(`");
  refused("(a)\\1", "error parsing regexp: invalid escape sequence: `\\1`");
  refused("(?=a)", "error parsing regexp: invalid or unsupported Perl syntax: `(?=`");
  refused("(?!a)", "error parsing regexp: invalid or unsupported Perl syntax: `(?!`");
  refused("a**", "error parsing regexp: invalid nested repetition operator: `**`");
  refused("[z-a]", "error parsing regexp: invalid character class range: `z-a`");
  refused("a{1001}", "error parsing regexp: invalid repeat count: `{1001}`");
  // Lookbehind is an opt-in extension of the engine; Go has none.
  assert.throws(() => parse('name~="(?<=a)b"'), FilterSyntaxError);
});

test("the error message wraps the pattern's position", () => {
  assert.throws(() => parse("name~=(a)\\1"), {
    message: "filters: parse error: [name~= >|(|< a)\\1]: error parsing regexp: invalid escape sequence: `\\1`",
  });
});
