// LiveDocument: follows an sse-gateway stream as one JSON document that is always the upstream's.
// Dependency-free ES module; README.md beside it is the manual, live-document.d.ts the types.
//
// Every event id is `<epoch>-<seq>-<hash>`, the hash being the first 8 bytes of SHA-256 over the
// RFC 8785 form of the whole document after the event. A client that checks it cannot drift: a
// patch applied to the wrong base, or altered on the way, makes it start over from a snapshot.

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const own = (o, k) => Object.hasOwn(o, k);
const fail = (why) => {
  throw new Error(why);
};
// Defined rather than assigned: `o["__proto__"] = v` would replace the object's prototype (and a
// document may hold such a key), where a defined property is just a key like any other. Reads go
// through `own` for the same reason: `constructor` is not a key of `{}`.
const put = (o, k, v) =>
  Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });

// RFC 6901.
const pointer = (p) => {
  if (typeof p !== "string") fail("no path");
  if (p === "") return [];
  if (p[0] !== "/") fail("bad pointer " + p);
  return p
    .slice(1)
    .split("/")
    .map((s) => (/~([^01]|$)/.test(s) ? fail("bad escape " + p) : s.replace(/~1/g, "/").replace(/~0/g, "~")));
};
// An array index; `-` (one past the end) only where an element may be added.
const index = (a, k, add) =>
  add && k === "-" ? a.length : /^(0|[1-9]\d*)$/.test(k) && +k < a.length + add ? +k : fail("bad index " + k);
const child = (node, k) =>
  Array.isArray(node) ? node[index(node, k, 0)] : isObj(node) && own(node, k) ? node[k] : fail("no " + k);

// Copies the containers along `path` (and nothing else: the rest is shared with `node`) and hands
// the last one, with the last key, to `change`, which alters that copy.
const edit = (node, path, change, i = 0) => {
  const arr = Array.isArray(node);
  const copy = arr ? node.slice() : isObj(node) ? { ...node } : fail("no parent");
  const k = path[i];
  if (i === path.length - 1) change(copy, k, arr);
  else put(copy, arr ? index(copy, k, 0) : k, edit(child(node, k), path, change, i + 1));
  return copy;
};
const add = (doc, path, v) =>
  path.length ? edit(doc, path, (c, k, arr) => (arr ? c.splice(index(c, k, 1), 0, v) : put(c, k, v))) : v;
const replace = (doc, path, v) =>
  path.length ? edit(doc, path, (c, k, arr) => put(c, arr ? index(c, k, 0) : own(c, k) ? k : fail("no " + k), v)) : v;
const remove = (doc, path) =>
  edit(doc, path, (c, k, arr) => (arr ? c.splice(index(c, k, 0), 1) : own(c, k) ? delete c[k] : fail("no " + k)));

/** Deep equality of two JSON values, as RFC 6902's `test` defines it. */
export const equal = (a, b) =>
  a === b ||
  (Array.isArray(a)
    ? Array.isArray(b) && a.length === b.length && a.every((x, i) => equal(x, b[i]))
    : isObj(a) &&
      isObj(b) &&
      Object.keys(a).length === Object.keys(b).length &&
      Object.keys(a).every((k) => own(b, k) && equal(a[k], b[k])));

/** RFC 6902. Returns a new document and leaves `doc` as it was; throws if an operation fails. */
export function applyPatch(doc, patch) {
  if (!Array.isArray(patch)) fail("not a patch");
  for (const o of patch) {
    const path = pointer(o.path);
    const value = () => (own(o, "value") ? o.value : fail("no value"));
    const op = o.op;
    if (op === "add") doc = add(doc, path, value());
    else if (op === "remove") doc = remove(doc, path.length ? path : fail("remove the root"));
    else if (op === "replace") doc = replace(doc, path, value());
    else if (op === "test") equal(path.reduce(child, doc), value()) || fail("test failed");
    else if (op === "move" || op === "copy") {
      const from = pointer(o.from);
      const v = from.reduce(child, doc);
      if (op === "move") {
        if (o.path.startsWith(o.from + "/")) fail("move into itself");
        doc = remove(doc, from);
      }
      doc = add(doc, path, v);
    } else fail("bad op " + op);
  }
  return doc;
}

/** RFC 7396. Returns a new document; only the members the patch touches are copied. */
export function mergePatch(doc, patch) {
  if (!isObj(patch)) return patch;
  const out = isObj(doc) ? { ...doc } : {};
  for (const k of Object.keys(patch)) {
    if (patch[k] === null) delete out[k];
    else put(out, k, mergePatch(own(out, k) ? out[k] : undefined, patch[k]));
  }
  return out;
}

/** RFC 8785 (JCS): `JSON.stringify`'s numbers and strings, keys sorted by UTF-16 code units. */
export const canonicalize = (v) =>
  Array.isArray(v)
    ? `[${v.map(canonicalize)}]`
    : isObj(v)
      ? `{${Object.keys(v)
          .sort()
          .map((k) => JSON.stringify(k) + ":" + canonicalize(v[k]))}}`
      : JSON.stringify(v);

// SHA-256 (FIPS 180-4) for pages without `crypto.subtle`, which browsers give only to secure
// contexts: a page on plain http from another host than localhost has none. The constants are the
// fractional parts of the first primes' square and cube roots, computed rather than listed.
const H = [];
const K = [];
for (let n = 2, i = 0; i < 64; n++) {
  let prime = 1;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) prime = 0;
  if (prime) {
    if (i < 8) H[i] = (n ** 0.5 * 2 ** 32) | 0;
    K[i++] = (n ** (1 / 3) * 2 ** 32) | 0;
  }
}
const rot = (x, n) => (x >>> n) | (x << (32 - n));

/** SHA-256 of bytes, as 64 lowercase hex digits. */
export function sha256(bytes) {
  const len = bytes.length;
  const words = new Int32Array(((len + 72) >> 6) << 4);
  for (let i = 0; i < len; i++) words[i >> 2] |= bytes[i] << (24 - (i % 4) * 8);
  words[len >> 2] |= 0x80 << (24 - (len % 4) * 8);
  words[words.length - 1] = len * 8;
  words[words.length - 2] = len / 2 ** 29;
  const h = H.slice();
  const w = new Int32Array(64);
  for (let j = 0; j < words.length; j += 16) {
    const s = h.slice();
    for (let i = 0; i < 64; i++) {
      const x = w[i - 15];
      const y = w[i - 2];
      w[i] =
        i < 16
          ? words[j + i]
          : ((rot(x, 7) ^ rot(x, 18) ^ (x >>> 3)) + (rot(y, 17) ^ rot(y, 19) ^ (y >>> 10)) + w[i - 7] + w[i - 16]) | 0;
      const [a, b, c, , e, f, g] = s;
      const t1 = s[7] + (rot(e, 6) ^ rot(e, 11) ^ rot(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
      const t2 = (rot(a, 2) ^ rot(a, 13) ^ rot(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      s.pop();
      s.unshift((t1 + t2) | 0);
      s[4] = (s[4] + t1) | 0;
    }
    for (let i = 0; i < 8; i++) h[i] = (h[i] + s[i]) | 0;
  }
  return h.map((v) => (v >>> 0).toString(16).padStart(8, "0")).join("");
}

/** The hash part of an event id for a document's text (its RFC 8785 form, or a text body). */
export async function checksum(text) {
  const bytes = new TextEncoder().encode(text);
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return sha256(bytes).slice(0, 16);
  const d = new Uint8Array(await subtle.digest("SHA-256", bytes));
  return [...d.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const ID = /^[0-9a-f]{12}-\d+-([0-9a-f]{16})$/;
const EVENTS = ["snapshot", "patch", "merge-patch", "upstream-status", "end", "overloaded"];

/**
 * One stream as a live document. Emits `change` (detail: { document, previous, event, id,
 * operations }) and `status` (detail: { state, ... }).
 */
export class LiveDocument extends EventTarget {
  #es;
  #gen = 0;
  #queue = Promise.resolve();
  #timer;
  #fails = 0;
  #options;
  #resolve;
  #reject;
  document = undefined;
  lastEventId = "";
  resyncs = 0;
  state = "connecting";
  closed = false;

  constructor(url, { withCredentials = false, format, EventSource = globalThis.EventSource } = {}) {
    super();
    this.url = url;
    this.#options = [withCredentials, format, EventSource];
    /** The first document (rejects if the stream ends or is closed before one came). */
    this.ready = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.ready.catch(() => {});
    this.#open(false);
  }

  /** Stops for good; `ready` rejects if no document came. */
  close() {
    this.closed = true;
    this.#gen++;
    this.#es?.close();
    clearTimeout(this.#timer);
    this.#reject(new Error("closed"));
  }

  #open(resume) {
    const [withCredentials, format, ES] = this.#options;
    const url = new URL(this.url, globalThis.location?.href);
    if (format) url.searchParams.set("format", format);
    // The header a native EventSource sends on its own reconnects; a new one sends none.
    if (resume && this.lastEventId) url.searchParams.set("lastEventId", this.lastEventId);
    const es = (this.#es = new ES(url.href, { withCredentials }));
    const gen = ++this.#gen;
    const on = (type, f) => es.addEventListener(type, (e) => gen === this.#gen && f(e));
    on("open", () => this.#status("connected"));
    // CLOSED: the browser gave up (an answer other than 200 text/event-stream) and will not retry.
    on("error", () => (es.readyState === 2 ? this.#again(true) : this.#status("reconnecting")));
    for (const type of EVENTS)
      on(type, (e) => {
        // Hashing may wait on crypto.subtle: the queue keeps events in their order.
        this.#queue = this.#queue.then(() =>
          gen === this.#gen ? this.#event(type, e).catch((error) => gen === this.#gen && this.#resync(error)) : 0,
        );
      });
  }

  async #event(type, e) {
    const data = e.data;
    if (type === "upstream-status" || type === "end" || type === "overloaded") {
      const d = JSON.parse(data);
      if (type === "upstream-status") return this.#status("upstream-" + d.state, d);
      if (type === "overloaded" || d.reconnect) return this.#status(type === "end" ? "reconnecting" : type, d);
      this.close();
      return this.#status("ended", d);
    }
    let doc;
    let text = type === "snapshot";
    let operations;
    if (text) {
      try {
        doc = JSON.parse(data);
        text = false;
      } catch {
        doc = data;
      }
    } else {
      operations = JSON.parse(data);
      doc = (type === "patch" ? applyPatch : mergePatch)(this.document, operations);
    }
    const id = e.lastEventId;
    const sum = ID.exec(id)?.[1];
    if (sum && sum !== (await checksum(text ? data : canonicalize(doc)))) {
      // A body that parses as JSON but that the gateway sent as text: hashed as sent.
      if (type === "snapshot" && sum === (await checksum(data))) doc = data;
      else fail("checksum mismatch at " + id);
    }
    const previous = this.document;
    this.document = doc;
    this.lastEventId = id;
    this.#fails = 0;
    this.#resolve(doc);
    this.dispatchEvent(new CustomEvent("change", { detail: { document: doc, previous, event: type, id, operations } }));
  }

  #status(state, detail) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { ...detail, state } }));
  }

  #resync(error) {
    this.resyncs++;
    this.#status("resync", { error });
    this.#again(false);
  }

  // Reconnects: at once the first time, then backing off with jitter (to 30 s) until a document
  // verifies, so a gateway that keeps refusing or a document that never verifies is not hammered.
  #again(resume) {
    this.#gen++;
    this.#es.close();
    if (resume) this.#status("reconnecting");
    const wait = this.#fails++ && Math.min(3e4, 500 * 2 ** this.#fails) * (0.5 + Math.random());
    this.#timer = setTimeout(() => this.#open(resume), wait);
  }
}
