// RFC 8785 (JCS): the RFC's own examples, its Appendix B number table, and agreement with an
// independent implementation (the `canonicalize` package) on random documents.
import { test } from "node:test";
import assert from "node:assert/strict";
import reference from "canonicalize";
import { canonicalize, checksum } from "../live-document.js";
import { rng, value } from "./random.mjs";

test("RFC 8785 §3.2.2: the example canonicalises as printed", () => {
  const input = String.raw`{
    "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
    "literals": [null, true, false]
  }`;
  assert.equal(
    canonicalize(JSON.parse(input)),
    String.raw`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
  );
});

test("RFC 8785 §3.2.3: keys sort by UTF-16 code units", () => {
  const input = String.raw`{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}`;
  // The RFC's order; a parsed object would list the integer-like key "1" first, so compare text.
  const order = [
    ["\r", "Carriage Return"],
    ["1", "One"],
    ["\u0080", "Control"],
    ["\u00f6", "Latin Small Letter O With Diaeresis"],
    ["\u20ac", "Euro Sign"],
    ["\ud83d\ude00", "Emoji: Grinning Face"],
    ["\ufb33", "Hebrew Letter Dalet With Dagesh"],
  ];
  const want = `{${order.map(([k, v]) => JSON.stringify(k) + ":" + JSON.stringify(v))}}`;
  assert.equal(canonicalize(JSON.parse(input)), want);
});

test("RFC 8785 Appendix B: numbers from their IEEE 754 bits", () => {
  const table = [
    ["0000000000000000", "0"],
    ["8000000000000000", "0"],
    ["0000000000000001", "5e-324"],
    ["8000000000000001", "-5e-324"],
    ["7fefffffffffffff", "1.7976931348623157e+308"],
    ["ffefffffffffffff", "-1.7976931348623157e+308"],
    ["4340000000000000", "9007199254740992"],
    ["c340000000000000", "-9007199254740992"],
    ["4430000000000000", "295147905179352830000"],
    ["44b52d02c7e14af5", "9.999999999999997e+22"],
    ["44b52d02c7e14af6", "1e+23"],
    ["44b52d02c7e14af7", "1.0000000000000001e+23"],
    ["444b1ae4d6e2ef4e", "999999999999999700000"],
    ["444b1ae4d6e2ef4f", "999999999999999900000"],
    ["444b1ae4d6e2ef50", "1e+21"],
    ["3eb0c6f7a0b5ed8c", "9.999999999999997e-7"],
    ["3eb0c6f7a0b5ed8d", "0.000001"],
    ["41b3de4355555553", "333333333.3333332"],
    ["41b3de4355555554", "333333333.33333325"],
    ["41b3de4355555555", "333333333.3333333"],
    ["41b3de4355555556", "333333333.3333334"],
    ["41b3de4355555557", "333333333.33333343"],
    ["becbf647612f3696", "-0.0000033333333333333333"],
    ["43143ff3c1cb0959", "1424953923781206.2"],
  ];
  const view = new DataView(new ArrayBuffer(8));
  for (const [bits, text] of table) {
    view.setBigUint64(0, BigInt("0x" + bits));
    assert.equal(canonicalize(view.getFloat64(0)), text, bits);
  }
  // As the gateway (serde_json_canonicalizer) writes integers past 2^53: the double they parse to.
  assert.equal(canonicalize(JSON.parse("[9007199254740993, 12345678901234567890, -0, 1.0]")), "[9007199254740992,12345678901234567000,0,1]");
});

test("the README's test vector: canonical form and hash", async () => {
  const doc = JSON.parse('{ "b": [1, 2.50, "x"], "a": { "é": true, "z": null } }');
  assert.equal(canonicalize(doc), '{"a":{"z":null,"é":true},"b":[1,2.5,"x"]}');
  assert.equal(await checksum(canonicalize(doc)), "462e36fe2242ede9");
  assert.equal(await checksum("plain text\nbody"), "c366ea626fb16186");
});

test("agrees with the canonicalize package on 2,000 random documents", () => {
  const r = rng(8785);
  for (let i = 0; i < 2000; i++) {
    const doc = value(r);
    const ours = canonicalize(doc);
    assert.equal(ours, reference(doc), JSON.stringify(doc));
    assert.deepStrictEqual(JSON.parse(ours), JSON.parse(JSON.stringify(doc)));
  }
});
