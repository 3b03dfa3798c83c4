// RFC 6902 against the whole json-patch-test-suite, and RFC 7396 against its Appendix A.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { applyPatch, mergePatch } from "../live-document.js";

const require = createRequire(import.meta.url);

for (const file of ["tests.json", "spec_tests.json"]) {
  const cases = require(`json-patch-test-suite/${file}`);
  test(`json-patch-test-suite ${file}: every enabled case`, () => {
    let ran = 0;
    for (const [i, c] of cases.entries()) {
      if (c.disabled) continue;
      ran++;
      const name = `${file}#${i} ${c.comment ?? c.error ?? ""}`;
      const before = structuredClone(c.doc);
      if ("error" in c) {
        assert.throws(() => applyPatch(c.doc, c.patch), Error, name);
      } else {
        const want = "expected" in c ? c.expected : c.doc;
        assert.deepStrictEqual(applyPatch(c.doc, c.patch), want, name);
      }
      assert.deepStrictEqual(c.doc, before, `${name}: the input is untouched`);
    }
    assert.ok(ran >= 15, `${ran} cases`);
  });
}

test("a patch copies only the containers on its path", () => {
  const doc = { a: { x: [1, 2] }, b: { y: 1 } };
  const next = applyPatch(doc, [{ op: "add", path: "/a/x/-", value: 3 }]);
  assert.deepStrictEqual(next, { a: { x: [1, 2, 3] }, b: { y: 1 } });
  assert.deepStrictEqual(doc, { a: { x: [1, 2] }, b: { y: 1 } });
  assert.equal(next.b, doc.b);
  assert.notEqual(next.a, doc.a);
});

test("a failing operation leaves the document unchanged and throws", () => {
  const doc = { a: 1 };
  assert.throws(() => applyPatch(doc, [{ op: "replace", path: "/a", value: 2 }, { op: "remove", path: "/nope" }]));
  assert.deepStrictEqual(doc, { a: 1 });
});

test("prototype keys are plain members: kept, and never reach a prototype", () => {
  const doc = JSON.parse('{"v":1}');
  const next = applyPatch(doc, [
    { op: "add", path: "/__proto__", value: { polluted: "yes" } },
    { op: "add", path: "/__proto__/more", value: 1 },
    { op: "add", path: "/constructor", value: { prototype: { polluted: "yes" } } },
    { op: "add", path: "/constructor/prototype/again", value: "yes" },
  ]);
  assert.equal({}.polluted, undefined);
  assert.equal(Object.getPrototypeOf(next), Object.prototype);
  assert.deepStrictEqual(Object.keys(next), ["v", "__proto__", "constructor"]);
  assert.equal(JSON.stringify(next), '{"v":1,"__proto__":{"polluted":"yes","more":1},"constructor":{"prototype":{"polluted":"yes","again":"yes"}}}');
  // Inherited members are not the document's.
  assert.throws(() => applyPatch({}, [{ op: "add", path: "/constructor/prototype/x", value: 1 }]));
  assert.throws(() => applyPatch({}, [{ op: "remove", path: "/toString" }]));
  assert.throws(() => applyPatch({}, [{ op: "test", path: "/__proto__", value: {} }]));
  const merged = mergePatch({ v: 1 }, JSON.parse('{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}'));
  assert.equal({}.polluted, undefined);
  assert.equal(Object.getPrototypeOf(merged), Object.prototype);
  assert.equal(JSON.stringify(merged), '{"v":1,"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}');
});

// RFC 7396 Appendix A, every row.
const RFC7396 = [
  [{ a: "b" }, { a: "c" }, { a: "c" }],
  [{ a: "b" }, { b: "c" }, { a: "b", b: "c" }],
  [{ a: "b" }, { a: null }, {}],
  [{ a: "b", b: "c" }, { a: null }, { b: "c" }],
  [{ a: ["b"] }, { a: "c" }, { a: "c" }],
  [{ a: "c" }, { a: ["b"] }, { a: ["b"] }],
  [{ a: { b: "c" } }, { a: { b: "d", c: null } }, { a: { b: "d" } }],
  [{ a: [{ b: "c" }] }, { a: [1] }, { a: [1] }],
  [["a", "b"], ["c", "d"], ["c", "d"]],
  [{ a: "b" }, ["c"], ["c"]],
  [{ a: "foo" }, null, null],
  [{ a: "foo" }, "bar", "bar"],
  [{ e: null }, { a: 1 }, { e: null, a: 1 }],
  [[1, 2], { a: "b", c: null }, { a: "b" }],
  [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
];

test("RFC 7396 Appendix A", () => {
  for (const [target, patch, want] of RFC7396) {
    const before = structuredClone(target);
    assert.deepStrictEqual(mergePatch(target, patch), want, JSON.stringify([target, patch]));
    assert.deepStrictEqual(target, before, "the target is untouched");
  }
});

test("a merge patch copies only the members it touches", () => {
  const doc = { a: { x: 1 }, b: { y: 1 } };
  const next = mergePatch(doc, { a: { z: 2 } });
  assert.deepStrictEqual(next, { a: { x: 1, z: 2 }, b: { y: 1 } });
  assert.equal(next.b, doc.b);
  assert.deepStrictEqual(doc, { a: { x: 1 }, b: { y: 1 } });
});
