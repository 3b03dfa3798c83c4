//! Pure: the checksum in every event id, which says what document a client holds after the
//! event, so a client can tell that its copy drifted (a patch applied to the wrong base, a
//! replayed event) instead of rendering a wrong document forever.
//!
//! It is the first 8 bytes of SHA-256 over the RFC 8785 (JSON Canonicalization Scheme) form of
//! the whole document: a browser rebuilds that form from its parsed value with nothing but
//! `JSON.stringify`'s number and string rules and a key sort, whatever order or spacing the
//! upstream used. For a body that is not JSON, it is over the text the client is sent.

use std::io::{self, Write};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The checksum of a JSON document, over its RFC 8785 form, hashed as it is written.
pub fn of_json(doc: &Value) -> u64 {
    let mut out = io::BufWriter::with_capacity(16 * 1024, Hashing(Sha256::new()));
    // Neither side can fail: the writer only takes bytes in, and a `Value` holds no NaN.
    let _ = canonical(&mut out, doc).and_then(|()| out.flush());
    prefix(&out.get_ref().0.clone().finalize())
}

/// Writes `v` in its RFC 8785 form.
///
/// Written here rather than with `serde_json_canonicalizer` (which the tests hold this to, byte
/// for byte): that crate buffers every member to sort them, and took 1.7 ms for a 33 KB document
/// that serde_json writes in 0.23 ms, once per change of every stream, which tripled the
/// gateway's CPU in the Streamdata benchmark. RFC 8785 is JSON.stringify's output with sorted
/// keys: serde_json already writes strings so (the same escapes, lowercase `\u00xx`); numbers are
/// the double a browser parses, in ECMAScript's shortest form (`ryu-js`); keys sort by UTF-16
/// code units.
pub fn canonical(out: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::Null => out.write_all(b"null"),
        Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Number(n) => match n.as_f64().filter(|f| f.is_finite()) {
            Some(f) => out.write_all(ryu_js::Buffer::new().format_finite(f).as_bytes()),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a finite number",
            )),
        },
        Value::String(s) => serde_json::to_writer(&mut *out, s).map_err(io::Error::from),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                canonical(out, item)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.write_all(b"{")?;
            for (i, (key, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, key).map_err(io::Error::from)?;
                out.write_all(b":")?;
                canonical(out, value)?;
            }
            out.write_all(b"}")
        }
    }
}

/// SHA-256 as an `io::Write`.
struct Hashing(Sha256);

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The checksum of a text document: its UTF-8 bytes as a client's `event.data` holds them,
/// where every CR LF or lone CR of the body is an LF (SSE splits data lines on all three).
pub fn of_text(body: &str) -> u64 {
    if !body.contains('\r') {
        return first8(body.as_bytes());
    }
    first8(body.replace("\r\n", "\n").replace('\r', "\n").as_bytes())
}

/// How the checksum is written in an id: 16 lowercase hex digits.
pub fn hex(sum: u64) -> String {
    format!("{sum:016x}")
}

fn first8(bytes: &[u8]) -> u64 {
    prefix(&Sha256::digest(bytes))
}

/// The first 8 bytes of a digest, big-endian.
fn prefix(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// This module's RFC 8785 form of `v`.
    fn form(v: &Value) -> String {
        let mut out = Vec::new();
        super::canonical(&mut out, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn canonical(text: &str) -> String {
        form(&serde_json::from_str(text).unwrap())
    }

    /// RFC 8785 §3.2.2's example, byte for byte.
    #[test]
    fn the_rfcs_example_canonicalises_as_the_rfc_prints_it() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        assert_eq!(
            canonical(input),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    /// RFC 8785 §3.2.3: keys sort by UTF-16 code units, so the emoji (a surrogate pair starting
    /// 0xD83D) comes before U+FB33, unlike a sort by code points.
    #[test]
    fn keys_sort_by_utf16_code_units() {
        let input =
            r#"{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5,"\u0080":6,"\u00f6":7}"#;
        let order: Vec<Value> = serde_json::from_str::<Value>(&canonical(input))
            .unwrap()
            .as_object()
            .unwrap()
            .values()
            .cloned()
            .collect();
        assert_eq!(order, [2, 4, 6, 7, 1, 5, 3].map(|n| json!(n)));
    }

    /// RFC 8785 Appendix B's number formatting (IEEE 754 bits → text), and integers past 2^53
    /// written as the double a browser parses them into.
    #[test]
    fn numbers_are_written_as_ecmascript_writes_doubles() {
        let cases: [(u64, &str); 12] = [
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x444b1ae4d6e2ef50, "1e+21"),
        ];
        for (bits, text) in cases {
            let v = json!(f64::from_bits(bits));
            assert_eq!(form(&v), text, "{bits:#x}");
        }
        assert_eq!(canonical("9007199254740993"), "9007199254740992");
        assert_eq!(
            canonical("[12345678901234567890, -0, 1.0]"),
            "[12345678901234567000,0,1]"
        );
    }

    /// The test vector the README's event reference prints, for client authors.
    #[test]
    fn the_documented_test_vector_holds() {
        let doc: Value =
            serde_json::from_str(r#"{ "b": [1, 2.50, "x"], "a": { "é": true, "z": null } }"#)
                .unwrap();
        assert_eq!(form(&doc), r#"{"a":{"z":null,"é":true},"b":[1,2.5,"x"]}"#);
        assert_eq!(hex(of_json(&doc)), VECTOR_HASH);
        assert_eq!(hex(of_text("plain text\nbody")), "c366ea626fb16186");
        assert_eq!(of_text("plain text\r\nbody"), of_text("plain text\nbody"));
        assert_eq!(of_text("plain text\rbody"), of_text("plain text\nbody"));
    }

    const VECTOR_HASH: &str = "462e36fe2242ede9";

    /// Any JSON, with what RFC 8785 treats specially: keys and strings from all of Unicode
    /// (control characters, surrogate pairs), and numbers of every size and kind.
    fn any_doc() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,6}|[\\x00-\\x1f\\x7f\"\\\\/\\u{2028}]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,3}|[\\x00-\\x1f]{1,2}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The same bytes as `serde_json_canonicalizer`, a maintained RFC 8785 implementation,
        /// and the same checksum as over its bytes.
        #[test]
        fn the_form_is_the_maintained_crates_byte_for_byte(doc in any_doc()) {
            let theirs = serde_json_canonicalizer::to_string(&doc).unwrap();
            proptest::prop_assert_eq!(form(&doc), theirs.clone());
            proptest::prop_assert_eq!(of_json(&doc), first8(theirs.as_bytes()));
        }
    }
}
