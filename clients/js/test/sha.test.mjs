// The SHA-256 that pages without crypto.subtle (plain http off localhost) use, against node:crypto.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { canonicalize, checksum, sha256 } from "../live-document.js";
import { bytes, rng, value } from "./random.mjs";

const node = (b) => createHash("sha256").update(b).digest("hex");

test("FIPS 180-4 vectors", () => {
  const enc = (s) => new TextEncoder().encode(s);
  assert.equal(sha256(enc("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assert.equal(sha256(enc("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert.equal(
    sha256(enc("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
});

test("agrees with node:crypto on every length to 300 bytes and on random inputs", () => {
  const r = rng(180);
  for (let n = 0; n <= 300; n++) {
    const b = bytes(r, n);
    assert.equal(sha256(b), node(b), `length ${n}`);
  }
  for (let i = 0; i < 50; i++) {
    const b = bytes(r, Math.floor(r() * 70000));
    assert.equal(sha256(b), node(b), `length ${b.length}`);
  }
});

test("without crypto.subtle the checksum is the same, from the fallback", async () => {
  const r = rng(12);
  const docs = Array.from({ length: 100 }, () => canonicalize(value(r)));
  const subtle = await Promise.all(docs.map(checksum));
  const saved = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true });
  try {
    assert.equal(globalThis.crypto?.subtle, undefined);
    assert.deepStrictEqual(await Promise.all(docs.map(checksum)), subtle);
    assert.equal(await checksum("plain text\nbody"), "c366ea626fb16186");
  } finally {
    Object.defineProperty(globalThis, "crypto", saved);
  }
  assert.deepStrictEqual(docs.map((d) => node(d).slice(0, 16)), subtle);
});
