// Seeded random JSON values and bytes for the property tests, so a failure reproduces.
export function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const CHARS = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u0000", "\u001f", "\u007f", "\u0080", "é", "ö", "€", "\u2028", "\ufb33", "\ud83d\ude00", "𝄞", "~", "__proto__"];

export function string(r) {
  let s = "";
  for (let n = Math.floor(r() * 6); n > 0; n--) s += CHARS[Math.floor(r() * CHARS.length)];
  return s;
}

// Any finite double, from its bits, or a "nice" decimal.
export function number(r) {
  if (r() < 0.5) return Math.round((r() - 0.5) * 10 ** Math.floor(r() * 8)) / 10 ** Math.floor(r() * 4);
  const view = new DataView(new ArrayBuffer(8));
  for (;;) {
    view.setUint32(0, Math.floor(r() * 2 ** 32));
    view.setUint32(4, Math.floor(r() * 2 ** 32));
    const v = view.getFloat64(0);
    if (Number.isFinite(v)) return v;
  }
}

export function value(r, depth = 0) {
  const k = r() * (depth > 3 ? 5 : 7);
  if (k < 1) return null;
  if (k < 2) return r() < 0.5;
  if (k < 3) return number(r);
  if (k < 5) return string(r);
  const n = Math.floor(r() * 5);
  if (k < 6) return Array.from({ length: n }, () => value(r, depth + 1));
  const o = {};
  for (let i = 0; i < n; i++) Object.defineProperty(o, string(r), { value: value(r, depth + 1), enumerable: true, writable: true, configurable: true });
  return o;
}

export function bytes(r, n) {
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}
