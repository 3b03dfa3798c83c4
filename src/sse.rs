//! Pure encoding of Server-Sent Events (WHATWG HTML §9.2).

use bytes::{BufMut, Bytes, BytesMut};

/// A comment: browsers ignore it, proxies see traffic, and a dead peer shows up as a write error.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// One event as it goes on the wire. `data` is split on every line break (CRLF, CR, LF) into
/// `data:` lines, because a raw newline inside a field would start a new field: unsplit data is
/// a field-injection bug. Name and id must hold no CR, LF or NUL; any that slip in are dropped.
pub fn event(name: Option<&str>, id: Option<&str>, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(
        data.len() + name.map_or(0, str::len) + id.map_or(0, str::len) + 32,
    );
    if let Some(name) = name {
        field(&mut buf, b"event: ", name);
    }
    if let Some(id) = id {
        field(&mut buf, b"id: ", id);
    }
    let mut rest = data;
    loop {
        buf.put_slice(b"data: ");
        match rest.find(['\r', '\n']) {
            Some(i) => {
                buf.put_slice(&rest.as_bytes()[..i]);
                buf.put_u8(b'\n');
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                buf.put_slice(rest.as_bytes());
                buf.put_u8(b'\n');
                break;
            }
        }
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

fn field(buf: &mut BytesMut, prefix: &[u8], value: &str) {
    debug_assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
    buf.put_slice(prefix);
    for b in value.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)) {
        buf.put_u8(b);
    }
    buf.put_u8(b'\n');
}

/// The `retry: <ms>` field: how long a browser waits before it reconnects. It is a line, not
/// a block: put it in front of an event so the event's parser sees both, or end it with `\n`.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n"))
}

/// A comment line; line breaks in `text` are dropped.
pub fn comment(text: &str) -> Bytes {
    let clean: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    Bytes::from(format!(": {clean}\n\n"))
}
