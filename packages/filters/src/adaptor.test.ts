import { test } from "node:test";
import assert from "node:assert/strict";
import { adaptFunc, adaptObject, parse } from "./index.js";

test("adaptObject walks nested objects and stringifies scalars", () => {
  const a = adaptObject({ id: "c1", pid: 42, ok: false, big: 7n, runtime: { name: "io.containerd.runc.v2" } });
  assert.equal(a.field(["id"]), "c1");
  assert.equal(a.field(["pid"]), "42");
  assert.equal(a.field(["ok"]), "false");
  assert.equal(a.field(["big"]), "7");
  assert.equal(a.field(["runtime", "name"]), "io.containerd.runc.v2");
  assert.equal(a.field(["runtime"]), undefined, "objects are not values");
  assert.equal(a.field(["runtime", "name", "x"]), undefined);
  assert.equal(a.field([]), undefined);
});

test("adaptObject treats empty and nullish scalars as absent", () => {
  const a = adaptObject({ image: "", parent: null, snap: undefined });
  assert.equal(a.field(["image"]), undefined);
  assert.equal(a.field(["parent"]), undefined);
  assert.equal(a.field(["snap"]), undefined);
  assert.equal(a.field(["toString"]), undefined, "inherited properties are ignored");
});

test("adaptObject looks up maps by joined key", () => {
  const a = adaptObject({
    labels: { "io.cri.x": "1", empty: "" },
    annotations: new Map([["org.opencontainers.image.ref.name", "latest"]]),
    event: { labels: { "a.b": "c" } },
    props: { "a.b": "nested-map-not-declared" },
  });
  assert.equal(a.field(["labels", "io.cri.x"]), "1");
  assert.equal(a.field(["labels", "io", "cri", "x"]), "1");
  assert.equal(a.field(["labels", "empty"]), "", "map entries are present even when empty");
  assert.equal(a.field(["labels", "nope"]), undefined);
  assert.equal(a.field(["annotations", "org", "opencontainers", "image", "ref", "name"]), "latest");
  assert.equal(a.field(["event", "labels", "a", "b"]), "c", "maps are recognised at any depth");
  assert.equal(a.field(["props", "a", "b"]), undefined);
  assert.equal(adaptObject({ props: { "a.b": "v" } }, { maps: ["props"] }).field(["props", "a", "b"]), "v");
});

test("adaptObject delegates to nested adaptors and custom root fields", () => {
  const inner = adaptFunc((p) => (p[0] === "id" ? "inner-id" : undefined));
  const a = adaptObject(
    { topic: "/tasks/exit", event: inner, secret: "x" },
    { fields: { namespace: () => "k8s.io", secret: () => undefined, upper: (rest) => rest.join(".").toUpperCase() } },
  );
  assert.equal(a.field(["event", "id"]), "inner-id");
  assert.equal(a.field(["namespace"]), "k8s.io");
  assert.equal(a.field(["secret"]), undefined, "custom fields override the object");
  assert.equal(a.field(["upper", "a", "b"]), "A.B");
  assert.ok(parse("namespace==k8s.io,event.id==inner-id,topic~=exit$").match(a));
});
