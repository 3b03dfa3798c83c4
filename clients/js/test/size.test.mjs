// The budget: at most 3 KB once minified (terser) and gzipped, what a page actually downloads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { minify } from "terser";

test("live-document.js is at most 3072 bytes minified and gzipped", async () => {
  const source = readFileSync(new URL("../live-document.js", import.meta.url), "utf8");
  const { code } = await minify(source, { module: true, compress: { passes: 2 }, mangle: true });
  const size = gzipSync(code, { level: 9 }).length;
  console.log(`live-document.js: ${source.length} bytes, ${code.length} minified, ${size} gzipped`);
  assert.ok(size <= 3072, `${size} bytes`);
  // The minified module still works.
  const mod = await import("data:text/javascript," + encodeURIComponent(code));
  assert.equal(typeof mod.LiveDocument, "function");
  assert.equal(mod.canonicalize({ b: 1, a: [2.5] }), '{"a":[2.5],"b":1}');
});
