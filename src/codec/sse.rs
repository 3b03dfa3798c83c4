//! Pure encoding of Server-Sent Events (WHATWG HTML §9.2).

use std::time::Duration;

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

/// The data of one encoded event, its `data:` lines joined by LF: what a client's `event.data`
/// is. (A new cluster holder reads the document it continues from out of the last snapshot.)
pub fn data_of(event: &[u8]) -> String {
    let text = String::from_utf8_lossy(event);
    let lines: Vec<&str> = text
        .split('\n')
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    lines.join("\n")
}

/// The `id:` of one encoded event, if it has one. (A cluster replica reads an event's checksum
/// back out of the bytes the holder encoded.)
pub fn id_of(event: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(event).ok()?;
    text.split('\n')
        .take_while(|line| !line.is_empty())
        .find_map(|line| line.strip_prefix("id: "))
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
/// [`Event::retry`] and [`with_retry`] do either for you.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n"))
}

/// One event, built field by field, for the events the gateway writes itself (greetings,
/// goodbyes, refusals): `Event::new("end").retry(d).data(json).encode()`. The shape is axum's,
/// but nothing here panics: `encode` keeps [`event`]'s line splitting and sanitising.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    name: &'a str,
    retry: Option<Duration>,
    data: &'a str,
}

impl<'a> Event<'a> {
    /// An event of type `name`, with empty data until [`Event::data`].
    pub fn new(name: &'a str) -> Event<'a> {
        Event {
            name,
            retry: None,
            data: "",
        }
    }

    /// A `retry:` in the event's own block, so a parser applies it with the event.
    pub fn retry(self, retry: Duration) -> Event<'a> {
        Event {
            retry: Some(retry),
            ..self
        }
    }

    pub fn data(self, data: &'a str) -> Event<'a> {
        Event { data, ..self }
    }

    pub fn encode(self) -> Bytes {
        let event = event(Some(self.name), None, self.data);
        match self.retry {
            Some(retry) => with_retry(retry, &[event]),
            None => event,
        }
    }
}

/// A `retry:` field in front of events already encoded, in one buffer: the field joins the
/// first event's block, or stands in a block of its own when there are none.
pub fn with_retry(retry: Duration, events: &[Bytes]) -> Bytes {
    let field = self::retry(retry.as_millis() as u64);
    let len = field.len() + events.iter().map(Bytes::len).sum::<usize>() + 1;
    let mut buf = BytesMut::with_capacity(len);
    buf.put_slice(&field);
    if events.is_empty() {
        buf.put_u8(b'\n');
    }
    for event in events {
        buf.put_slice(event);
    }
    buf.freeze()
}

/// A comment line; line breaks in `text` are dropped. The gateway sends none but heartbeats;
/// tests interleave comments to show parsers skip them.
#[cfg(test)]
pub fn comment(text: &str) -> Bytes {
    let clean: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    Bytes::from(format!(": {clean}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_of_an_event_is_what_it_was_made_of() {
        for data in ["{\"a\":1}", "two\nlines", "", "x: y"] {
            let e = event(Some("snapshot"), Some("1-2"), data);
            assert_eq!(data_of(&e), data);
        }
    }
    use eventsource_stream::Eventsource;
    use futures_util::StreamExt;
    use proptest::prelude::*;

    /// What a real SSE parser makes of these bytes.
    fn parse(wire: Bytes) -> Vec<eventsource_stream::Event> {
        let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(wire)]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(stream.eventsource().map(|e| e.unwrap()).collect())
    }

    proptest! {
        #[test]
        fn any_data_survives_the_wire(data in "(\\PC|\r\n|\r|\n|data: |id: ){0,40}", name in "[a-z-]{1,12}", id in "[0-9a-f]{1,12}-[0-9]{1,5}") {
            let events = parse(event(Some(&name), Some(&id), &data));
            prop_assert_eq!(events.len(), 1);
            // A parser sees every line break as LF (WHATWG HTML §9.2.6).
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(&events[0].data, &expected);
            prop_assert_eq!(&events[0].event, &name);
            prop_assert_eq!(&events[0].id, &id);
        }
    }

    /// One event as a browser sees it: what `event` should give back for these fields.
    fn seen(name: Option<&str>, id: &str, data: &str) -> (String, String, String) {
        let clean = |s: &str| s.replace(['\r', '\n', '\0'], "");
        let name = name.map(clean).filter(|n| !n.is_empty());
        (
            name.unwrap_or_else(|| "message".into()),
            clean(id),
            data.replace("\r\n", "\n").replace('\r', "\n"),
        )
    }

    /// Anything a field could hold: line breaks of each kind, NUL, field names, a BOM, unicode.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "(\\PC|\r\n|\r|\n|\u{0}|\u{feff}|data: |data:|id: |event: |retry: |: ){0,24}",
            1 => prop::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            1 => any::<String>(),
        ]
    }

    /// A name or id as the gateway passes them: anything without CR, LF or NUL.
    fn field_text() -> impl Strategy<Value = String> {
        text().prop_map(|s| s.replace(['\r', '\n', '\0'], ""))
    }

    proptest! {
        #![proptest_config(crate::fuzz::config(256))]

        #[test]
        fn fuzz_sse_any_event_survives_the_wire(
            name in prop::option::of(field_text()),
            id in prop::option::of(field_text()),
            data in text(),
        ) {
            let events = parse(event(name.as_deref(), id.as_deref(), &data));
            prop_assert_eq!(events.len(), 1);
            let want = seen(name.as_deref(), id.as_deref().unwrap_or(""), &data);
            let e = &events[0];
            prop_assert_eq!((&e.event, &e.id, &e.data), (&want.0, &want.1, &want.2));
        }

        #[test]
        fn fuzz_sse_a_built_event_survives_the_wire(
            name in field_text(),
            ms in prop::option::of(0..u32::MAX as u64),
            data in text(),
        ) {
            let mut built = Event::new(&name).data(&data);
            if let Some(ms) = ms {
                built = built.retry(std::time::Duration::from_millis(ms));
            }
            let events = parse(built.encode());
            prop_assert_eq!(events.len(), 1);
            let want = seen(Some(&name), "", &data);
            let e = &events[0];
            prop_assert_eq!((&e.event, &e.id, &e.data), (&want.0, &want.1, &want.2));
            prop_assert_eq!(e.retry, ms.map(std::time::Duration::from_millis));
        }

        /// Events, comments and heartbeats back to back, cut into chunks anywhere: the same
        /// events in the same order, each `retry:` on the event it precedes.
        #[test]
        fn fuzz_sse_a_stream_in_any_chunks(
            items in prop::collection::vec(
                (prop::option::of(field_text()), prop::option::of(field_text()), text(),
                 prop::option::of(any::<u64>()), prop::option::of(text())),
                1..8,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            let mut last_id = String::new();
            for (name, id, data, retry_ms, note) in &items {
                if let Some(note) = note {
                    wire.extend_from_slice(&comment(note));
                    wire.extend_from_slice(HEARTBEAT);
                }
                if let Some(ms) = retry_ms {
                    wire.extend_from_slice(&retry(*ms));
                }
                wire.extend_from_slice(&event(name.as_deref(), id.as_deref(), data));
                if let Some(id) = id {
                    last_id = id.clone();
                }
                let (n, i, d) = seen(name.as_deref(), &last_id, data);
                want.push((n, i, d, retry_ms.map(std::time::Duration::from_millis)));
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut chunks = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([wire.len()]) {
                chunks.push(Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(&wire[from..c])));
                from = c;
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got: Vec<_> = rt.block_on(
                futures_util::stream::iter(chunks)
                    .eventsource()
                    .map(|e| e.map(|e| (e.event, e.id, e.data, e.retry)))
                    .collect::<Vec<_>>(),
            );
            let got: Vec<_> = got.into_iter().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got, want);
        }
    }

    /// Release builds drop CR, LF and NUL from a name or id (debug builds assert there are
    /// none): the field can't end early or smuggle in another field. Run by the long fuzz
    /// command, which builds with `--release`.
    #[cfg(not(debug_assertions))]
    mod sanitised {
        use super::*;

        proptest! {
            #![proptest_config(crate::fuzz::config(256))]

            #[test]
            fn fuzz_sse_a_name_or_id_cannot_inject_a_field(name in text(), id in text(), data in text()) {
                let events = parse(event(Some(&name), Some(&id), &data));
                prop_assert_eq!(events.len(), 1);
                let want = seen(Some(&name), &id, &data);
                let e = &events[0];
                prop_assert_eq!((&e.event, &e.id, &e.data), (&want.0, &want.1, &want.2));
            }
        }
    }

    #[test]
    fn empty_data_is_still_an_event() {
        let events = parse(event(Some("snapshot"), None, ""));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "");
    }

    #[test]
    fn retry_rides_with_the_next_event() {
        let mut wire = retry(1500).to_vec();
        wire.extend_from_slice(&event(Some("snapshot"), Some("1-1"), "{}"));
        let events = parse(Bytes::from(wire));
        assert_eq!(
            events[0].retry,
            Some(std::time::Duration::from_millis(1500))
        );
    }

    #[test]
    fn a_built_event_is_the_retry_line_then_the_event() {
        let built = Event::new("end")
            .retry(std::time::Duration::from_millis(2500))
            .data("{\"a\":1}")
            .encode();
        let mut by_hand = retry(2500).to_vec();
        by_hand.extend_from_slice(&event(Some("end"), None, "{\"a\":1}"));
        assert_eq!(built, by_hand);
        assert_eq!(
            Event::new("snapshot").data("x").encode(),
            event(Some("snapshot"), None, "x")
        );
    }

    #[test]
    fn a_retry_goes_with_the_first_of_its_events_or_stands_alone() {
        let d = std::time::Duration::from_millis(1500);
        let two = [event(Some("a"), None, "1"), event(Some("b"), None, "2")];
        let events = parse(with_retry(d, &two));
        let seen: Vec<_> = events.iter().map(|e| (&*e.event, e.retry)).collect();
        assert_eq!(seen, [("a", Some(d)), ("b", None)]);

        let alone = with_retry(d, &[]);
        assert_eq!(alone, &b"retry: 1500\n\n"[..]);
        let mut wire = alone.to_vec();
        wire.extend_from_slice(&event(Some("c"), None, "3"));
        let events = parse(Bytes::from(wire));
        assert_eq!(events.last().map(|e| e.data.as_str()), Some("3"));
    }

    #[test]
    fn comments_and_heartbeats_are_invisible_to_parsers() {
        let mut wire = comment("hello\nworld").to_vec();
        wire.extend_from_slice(HEARTBEAT);
        wire.extend_from_slice(&event(None, None, "x"));
        let events = parse(Bytes::from(wire));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "x");
    }
}
