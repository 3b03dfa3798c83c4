// LiveDocument against a fake EventSource, with ids made as the gateway makes them
// (hash by the independent `canonicalize` package and node:crypto).
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import reference from "canonicalize";
import { LiveDocument } from "../live-document.js";
import { FakeEventSource as ES } from "./fake-event-source.mjs";

const EPOCH = "00005d1c0a3e";
const hash = (text) => createHash("sha256").update(text).digest("hex").slice(0, 16);
const id = (seq, doc) => `${EPOCH}-${seq}-${hash(reference(doc))}`;
const URL_ = "http://gw.test/sse/prices";

async function until(what, cond) {
  const end = Date.now() + 2000;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

function follow(options = {}) {
  const live = new LiveDocument(URL_, { EventSource: ES, ...options });
  const changes = [];
  const states = [];
  live.addEventListener("change", (e) => changes.push(e.detail));
  live.addEventListener("status", (e) => states.push(e.detail));
  return { live, changes, states, es: ES.last() };
}

beforeEach(() => {
  ES.made.length = 0;
});

test("snapshot, patch and merge-patch reach the upstream's document, each verified", async () => {
  const { live, changes, states, es } = follow({ format: "json-patch", withCredentials: true });
  assert.equal(es.url.searchParams.get("format"), "json-patch");
  assert.equal(es.withCredentials, true);
  es.open();
  assert.deepStrictEqual(states, [{ state: "connected" }]);

  const d1 = { quotes: { "EUR/USD": { price: 1.08 } }, n: [1, 2] };
  const d2 = { quotes: { "EUR/USD": { price: 1.09 } }, n: [1, 2, 3] };
  const d3 = { quotes: { "EUR/USD": { price: 1.09 }, "GBP/USD": { price: 1.26 } }, n: [1, 2, 3] };
  const patch = [
    { op: "replace", path: "/quotes/EUR~1USD/price", value: 1.09 },
    { op: "add", path: "/n/-", value: 3 },
  ];
  es.emit("snapshot", d1, id(1, d1));
  es.emit("patch", patch, id(2, d2));
  es.emit("merge-patch", { quotes: { "GBP/USD": { price: 1.26 } } }, id(3, d3));
  assert.deepStrictEqual(await live.ready, d1);
  await until("three changes", () => changes.length === 3);

  assert.deepStrictEqual(live.document, d3);
  assert.equal(live.lastEventId, id(3, d3));
  assert.equal(live.resyncs, 0);
  assert.deepStrictEqual(changes.map((c) => c.event), ["snapshot", "patch", "merge-patch"]);
  assert.deepStrictEqual(changes.map((c) => c.id), [id(1, d1), id(2, d2), id(3, d3)]);
  assert.deepStrictEqual(changes[1].operations, patch);
  assert.equal(changes[0].previous, undefined);
  assert.equal(changes[1].previous, changes[0].document);
  assert.equal(changes[2].previous, changes[1].document);
  assert.equal(ES.made.length, 1);
});

test("previous documents are never changed, and untouched parts are shared", async () => {
  const { live, changes, es } = follow();
  const d1 = { a: { deep: [1, { x: 1 }] }, b: { keep: true } };
  const d2 = { a: { deep: [1, { x: 2 }] }, b: { keep: true } };
  const d3 = { a: { deep: [1, { x: 2 }], more: 1 }, b: { keep: true } };
  es.emit("snapshot", d1, id(1, d1));
  es.emit("patch", [{ op: "replace", path: "/a/deep/1/x", value: 2 }], id(2, d2));
  es.emit("merge-patch", { a: { more: 1 } }, id(3, d3));
  await until("three changes", () => changes.length === 3);
  assert.deepStrictEqual(changes[0].document, d1);
  assert.deepStrictEqual(changes[1].document, d2);
  assert.deepStrictEqual(live.document, d3);
  assert.equal(changes[1].document.b, changes[0].document.b);
  assert.equal(changes[1].document.a.deep[0], changes[0].document.a.deep[0]);
  assert.equal(changes[2].document.a.deep, changes[1].document.a.deep);
});

test("a patch that applies but gives another document (hash mismatch) resyncs from a snapshot", async () => {
  const { live, changes, states, es } = follow({ format: "json-patch" });
  const d1 = { v: 1, w: 1 };
  const d2 = { v: 2, w: 1 };
  es.emit("snapshot", d1, id(1, d1));
  // Altered on the way: still a valid patch, but not the one the id's hash describes.
  es.emit("patch", [{ op: "replace", path: "/v", value: 99 }], id(2, d2));
  es.emit("patch", [{ op: "replace", path: "/w", value: 2 }], id(3, { v: 2, w: 2 }));
  await until("a resync", () => live.resyncs === 1 && ES.made.length === 2);
  assert.equal(es.readyState, 2, "the old connection is closed");
  const again = ES.last();
  assert.equal(again.url.searchParams.get("lastEventId"), null, "asks for a snapshot");
  assert.equal(again.url.searchParams.get("format"), "json-patch");
  assert.ok(states.some((s) => s.state === "resync" && /checksum/.test(s.error.message)));
  assert.deepStrictEqual(live.document, d1, "the wrong document is never shown");
  assert.equal(changes.length, 1);

  const d3 = { v: 2, w: 2 };
  again.emit("snapshot", d3, id(3, d3));
  await until("the fresh snapshot", () => changes.length === 2);
  assert.deepStrictEqual(live.document, d3);
  es.emit("patch", [{ op: "replace", path: "/v", value: 5 }], id(4, { v: 5, w: 2 }));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepStrictEqual(live.document, d3, "the old connection is not heard any more");
  assert.equal(live.resyncs, 1);
});

test("a patch that fails to apply resyncs", async () => {
  const { live, states, es } = follow();
  const d1 = { v: 1 };
  es.emit("snapshot", d1, id(1, d1));
  es.emit("patch", [{ op: "remove", path: "/missing" }], id(2, {}));
  await until("a resync", () => live.resyncs === 1 && ES.made.length === 2);
  assert.equal(ES.last().url.searchParams.get("lastEventId"), null);
  assert.ok(states.some((s) => s.state === "resync"));
  assert.deepStrictEqual(live.document, d1);
});

test("a snapshot that does not verify resyncs, backing off after the first", async () => {
  const { live, es } = follow();
  es.emit("snapshot", { v: 1 }, id(1, { v: 2 }));
  await until("a resync", () => ES.made.length === 2);
  ES.last().emit("snapshot", { v: 1 }, id(1, { v: 2 }));
  await until("a second resync", () => live.resyncs === 2);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(ES.made.length, 2, "the second retry waits");
  live.close();
});

test("end without reconnect stops for good; ready rejects when no document came", async () => {
  const { live, states, es } = follow();
  es.open();
  es.emit("end", { reason: "access revoked", status: 401 });
  await until("ended", () => live.state === "ended");
  await assert.rejects(live.ready);
  assert.equal(live.closed, true);
  assert.equal(es.readyState, 2);
  assert.deepStrictEqual(states.at(-1), { reason: "access revoked", status: 401, state: "ended" });
  es.fail(2);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(ES.made.length, 1, "never reconnects");
});

test("end with reconnect leaves reconnecting to the EventSource, which sends Last-Event-ID", async () => {
  const { live, changes, states, es } = follow();
  const d1 = { v: 1 };
  es.emit("snapshot", d1, id(1, d1));
  es.emit("end", { reason: "stream reloaded", reconnect: true });
  await until("reconnecting", () => live.state === "reconnecting");
  assert.notEqual(es.readyState, 2, "not closed by the client");
  es.fail(0);
  es.open();
  const d2 = { v: 2 };
  es.emit("merge-patch", { v: 2 }, id(2, d2));
  await until("the change after reconnecting", () => changes.length === 2);
  assert.deepStrictEqual(live.document, d2);
  assert.equal(ES.made.length, 1);
  assert.deepStrictEqual(states.map((s) => s.state), ["reconnecting", "reconnecting", "connected"]);
});

test("overloaded: a browser that retries is left to it; one that gave up is reconnected, resuming", async () => {
  const { live, states, es } = follow();
  const d1 = { v: 1 };
  es.emit("snapshot", d1, id(1, d1));
  es.emit("overloaded", { reason: "the gateway is at its client limit" });
  await until("overloaded", () => live.state === "overloaded");
  assert.equal(states.at(-1).reason, "the gateway is at its client limit");
  es.fail(0);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(ES.made.length, 1, "a native EventSource reconnects by itself after retry:");
  es.fail(2);
  await until("a new connection", () => ES.made.length === 2);
  assert.equal(ES.last().url.searchParams.get("lastEventId"), id(1, d1), "resumes where it was");
  assert.equal(live.resyncs, 0);
  live.close();
});

test("upstream-status becomes a status", async () => {
  const { states, es } = follow();
  es.emit("upstream-status", { state: "failing", status: 503, error: "503", since: "now" });
  es.emit("upstream-status", { state: "healthy" });
  await until("two states", () => states.length === 2);
  assert.deepStrictEqual(states, [
    { state: "upstream-failing", status: 503, error: "503", since: "now" },
    { state: "upstream-healthy" },
  ]);
});

test("close() stops everything, even events already queued", async () => {
  const { live, changes, es } = follow();
  const d1 = { v: 1 };
  es.emit("snapshot", d1, id(1, d1));
  live.close();
  es.emit("snapshot", { v: 2 }, id(2, { v: 2 }));
  es.fail(2);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(es.readyState, 2);
  assert.equal(changes.length, 0);
  assert.equal(ES.made.length, 1);
  await assert.rejects(live.ready);
});

test("a text snapshot is a string document, hashed over its UTF-8 bytes", async () => {
  const { live, es } = follow();
  es.emit("snapshot", "plain text\nbody", `${EPOCH}-1-c366ea626fb16186`);
  assert.equal(await live.ready, "plain text\nbody");
  assert.equal(live.resyncs, 0);
});

test("the README's test vector verifies as a snapshot", async () => {
  const { live, es } = follow();
  es.emit("snapshot", '{ "b": [1, 2.50, "x"], "a": { "é": true, "z": null } }', `${EPOCH}-7-462e36fe2242ede9`);
  assert.deepStrictEqual(await live.ready, { a: { z: null, é: true }, b: [1, 2.5, "x"] });
  assert.equal(live.resyncs, 0);
});

test("ids without a hash (older gateways) are taken unverified", async () => {
  const { live, changes, es } = follow();
  es.emit("snapshot", { v: 1 }, "5d1c0a3e9b21-1");
  es.emit("merge-patch", { v: 2 }, "5d1c0a3e9b21-2");
  await until("two changes", () => changes.length === 2);
  assert.deepStrictEqual(live.document, { v: 2 });
  assert.equal(live.lastEventId, "5d1c0a3e9b21-2");
});

test("a document's prototype keys verify and never reach a prototype", async () => {
  const { live, changes, es } = follow();
  const d1 = { v: 1 };
  const d2 = JSON.parse('{"v":2,"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}');
  es.emit("snapshot", d1, id(1, d1));
  es.emit("merge-patch", '{"v":2,"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}', id(2, d2));
  await until("the change", () => changes.length === 2);
  assert.equal(live.resyncs, 0);
  assert.equal({}.polluted, undefined);
  assert.equal(Object.getPrototypeOf(live.document), Object.prototype);
  assert.equal(reference(live.document), reference(d2));
});

test("without crypto.subtle (an insecure context) events still verify, through the fallback", async () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true });
  try {
    const { live, changes, es } = follow();
    const d1 = { a: "é€😀", n: 1.5 };
    const d2 = { a: "é€😀", n: 2 };
    es.emit("snapshot", d1, id(1, d1));
    es.emit("patch", [{ op: "replace", path: "/n", value: 2 }], id(2, d2));
    es.emit("patch", [{ op: "replace", path: "/n", value: 3 }], id(3, d2));
    await until("a resync", () => live.resyncs === 1);
    assert.equal(changes.length, 2);
    assert.deepStrictEqual(live.document, d2);
    live.close();
  } finally {
    Object.defineProperty(globalThis, "crypto", saved);
  }
});
