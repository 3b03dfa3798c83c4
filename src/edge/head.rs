//! Reading one HTTP/1 request head, whole and in time, and deciding whose it is: a
//! subscription `front.rs` serves on the socket, or a request for pingora. pingora only ever
//! gets whole heads, so it never waits for one (its own wait is per read, and between
//! kept-alive requests has no limit at all).

use std::io;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::validate_request_authority;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{timeout_at, Instant};

use crate::routes::Routes;

/// Longest request head accepted; a longer one gets 431. Browsers send a few hundred bytes,
/// cookies included rarely more than 8 KiB; nginx's default is 8 KiB, pingora's 1 MiB.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// pingora's own limit: a head with more headers gets its 400.
pub(super) const MAX_HEADERS: usize = 256;
/// A head this short is parsed after every read; a longer one only when a line ends, so a head
/// dripped a byte at a time costs linear time, not quadratic.
const SHORT_HEAD: usize = 4 * 1024;
pub(super) enum Head {
    /// The connection closed, or stayed silent past its deadline, before a request began.
    Gone,
    /// A head that stopped short (closed, or past its deadline) after this many bytes.
    Cut(usize),
    /// A head longer than `MAX_HEAD`.
    TooLarge,
    /// A whole head that is not a subscription served here: pingora takes the bytes read.
    Pass(Vec<u8>),
    /// A whole HTTP/1.1 GET head for a stream path, and the bytes it came from.
    Stream(Box<RequestHeader>, Vec<u8>),
}

/// When a connection must have sent what.
#[derive(Clone, Copy)]
pub(super) struct Wait {
    /// No byte of a request by then: the connection is closed.
    pub first_byte: Instant,
    /// The head must be whole by then; `None`: `head_timeout` after its first byte.
    pub whole: Option<Instant>,
}

/// Reads until the head is whole, too long, or late. The routes are looked up as bytes arrive,
/// never held: a connection that waits must not pin an old config.
pub(super) async fn read_head<C: AsyncRead + Unpin>(
    conn: &mut C,
    routes: &ArcSwap<Routes>,
    wait: Wait,
    head_timeout: Duration,
) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut deadline = wait.first_byte;
    let mut ended = false;
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        let room = (MAX_HEAD - buf.len()) as u64;
        let n = match timeout_at(deadline, (&mut *conn).take(room).read_buf(&mut buf)).await {
            Ok(read) => read?,
            Err(_) => 0,
        };
        if n == 0 {
            return Ok(match buf.len() {
                0 => Head::Gone,
                n => Head::Cut(n),
            });
        }
        if buf.len() == n {
            deadline = wait.whole.unwrap_or_else(|| Instant::now() + head_timeout);
        }
        let new = buf.len() - n;
        ended = ended || ends_head(&buf[new.saturating_sub(2)..]);
        let parsed = if buf.len() <= SHORT_HEAD || buf[new..].contains(&b'\n') {
            parse(&buf, ended, &routes.load())
        } else {
            Parsed::Partial
        };
        match parsed {
            Parsed::Partial if buf.len() < MAX_HEAD => continue,
            Parsed::Partial => return Ok(Head::TooLarge),
            Parsed::Pass => return Ok(Head::Pass(buf)),
            Parsed::Stream(req) => return Ok(Head::Stream(req, buf)),
        }
    }
}

/// Whether `bytes` hold an empty line, the end of any head (httparse accepts bare LF too).
fn ends_head(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

#[derive(Debug)]
enum Parsed {
    /// Not whole yet.
    Partial,
    /// Whole, or refused by pingora without reading on: pingora's.
    Pass,
    /// A subscription to serve here.
    Stream(Box<RequestHeader>),
}

/// Whether `buf` starts with a whole head, and whose it is; `ended`: whether `buf` holds an
/// empty line ([`ends_head`]). Only a plain GET on a stream path, with no body and no upgrade,
/// is served here; anything unusual goes to pingora, whose HTTP/1 handling is complete, and
/// only once it is whole, so pingora never waits for a head.
fn parse(buf: &[u8], ended: bool, routes: &Routes) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(status) => status,
        // pingora percent-escapes a request line httparse refuses and parses again, so it must
        // get the whole head; any other error it answers with 400 without reading on.
        Err(httparse::Error::Token | httparse::Error::Version)
            if !ended && starts_like_a_request_line(buf) =>
        {
            return Parsed::Partial
        }
        Err(_) => return Parsed::Pass,
    };
    if status.is_partial() {
        return Parsed::Partial;
    }
    if req.method != Some("GET")
        || req.version != Some(1)
        || req.headers.iter().any(|h| needs_pingora(h))
    {
        return Parsed::Pass;
    }
    let Some(target) = req.path else {
        return Parsed::Pass;
    };
    // A fragment has no place in a request target (RFC 9112 §3.2): the URI parser drops it, so
    // the path served would not be the one sent. pingora answers such a head.
    if target.contains('#') {
        return Parsed::Pass;
    }
    let path = target.split('?').next().unwrap_or(target);
    if routes.find(path).is_none() {
        return Parsed::Pass;
    }
    let Ok(mut header) =
        RequestHeader::build(Method::GET, target.as_bytes(), Some(req.headers.len()))
    else {
        return Parsed::Pass;
    };
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::Pass;
        };
        if header.append_header(name, value).is_err() {
            return Parsed::Pass;
        }
    }
    // pingora refuses (400) a duplicate Host, userinfo, or a Host that differs from the
    // target's authority; so does this path.
    if validate_request_authority(&header).is_err() {
        return Parsed::Pass;
    }
    Parsed::Stream(Box::new(header))
}

/// pingora's test for a request line worth escaping (`^\w+ .+ HTTP/`), up to its first space.
fn starts_like_a_request_line(buf: &[u8]) -> bool {
    let method = buf.split(|&b| b == b' ').next().unwrap_or_default();
    !method.is_empty()
        && method
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// A body, an upgrade or an expectation: leave the request to pingora.
fn needs_pingora(h: &httparse::Header<'_>) -> bool {
    let name = h.name;
    (name.eq_ignore_ascii_case("content-length") && h.value != b"0")
        || name.eq_ignore_ascii_case("transfer-encoding")
        || name.eq_ignore_ascii_case("upgrade")
        || name.eq_ignore_ascii_case("expect")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use proptest::prelude::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    fn routes() -> Routes {
        let yaml = "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /sse/doc\n    upstream: api\n  - path: /sse/o/{id}\n    upstream: api\n";
        Routes::new(config::parse("h.yaml", yaml, &|_| None, &|_, _| None).unwrap())
    }

    fn parse_all(buf: &[u8]) -> Parsed {
        parse(buf, ends_head(buf), &routes())
    }

    /// The law the direct path rests on: it serves a head only when httparse (pingora's own
    /// parser, same limits) reads it as a whole HTTP/1.1 GET for a stream path.
    fn check_stream_law(buf: &[u8], parsed: &Parsed) -> Result<(), TestCaseError> {
        let Parsed::Stream(req) = parsed else {
            return Ok(());
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut theirs = httparse::Request::new(&mut headers);
        let status = theirs.parse(buf);
        prop_assert!(
            matches!(status, Ok(httparse::Status::Complete(_))),
            "{status:?}"
        );
        prop_assert_eq!(theirs.method, Some("GET"));
        prop_assert_eq!(theirs.version, Some(1));
        let target = theirs.path.unwrap();
        prop_assert_eq!(req.raw_path(), target.as_bytes());
        let path = target.split('?').next().unwrap();
        prop_assert!(routes().find(path).is_some(), "{path}");
        Ok(())
    }

    /// A plausible head: mostly what a browser sends, often with what attackers add.
    fn head() -> impl Strategy<Value = Vec<u8>> {
        let method = prop_oneof![
            4 => Just("GET"),
            1 => prop::sample::select(vec!["POST", "HEAD", "get", "OPTIONS", "PRI"]),
        ];
        let target = prop_oneof![
            4 => prop::sample::select(vec!["/sse/doc", "/sse/doc?format=snapshot", "/sse/o/7"]),
            1 => prop::sample::select(vec![
                "/sse/o/%2e%2e",
                "/sse/o/a b",
                "/api",
                "http://gateway/sse/doc",
                "*",
            ]),
        ];
        let version = prop_oneof![
            4 => Just("HTTP/1.1"),
            1 => prop::sample::select(vec!["HTTP/1.0", "HTTP/2.0", "HTTP/1.1x"]),
        ];
        let header = prop_oneof![
            6 => prop::sample::select(vec![
                "Accept: text/event-stream",
                "Content-Length: 0",
                "Last-Event-ID: 5d1c0a3e9b21-42",
                "Cookie: a=b",
            ]),
            1 => prop::sample::select(vec![
                "Host: other",
                "Host: u@gateway",
                "Content-Length: 5",
                "Transfer-Encoding: chunked",
                "Upgrade: websocket",
                "Expect: 100-continue",
                "X-Bad Name: 1",
                " folded",
            ]),
        ];
        let eol = prop_oneof![4 => Just("\r\n"), 1 => Just("\n")];
        (
            method,
            target,
            version,
            prop::collection::vec(header, 0..5),
            // Past `SHORT_HEAD` at times, where heads are parsed only when a line ends.
            prop_oneof![3 => Just(0usize), 1 => 0..6000usize],
            eol,
        )
            .prop_map(|(m, t, v, hs, pad, eol)| {
                let mut out = format!("{m} {t} {v}{eol}Host: gateway{eol}");
                for h in hs {
                    out.push_str(h);
                    out.push_str(eol);
                }
                if pad > 0 {
                    out.push_str(&format!("X-Pad: {}{eol}", "p".repeat(pad)));
                }
                out.push_str(eol);
                out.into_bytes()
            })
    }

    /// `head()` with bytes replaced, inserted or cut.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let edit = (any::<prop::sample::Index>(), any::<u8>(), 0..3u8);
        (
            head(),
            prop::collection::vec(edit, 0..4),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(mut buf, edits, cut)| {
                for (at, byte, kind) in edits {
                    let i = at.index(buf.len().max(1)).min(buf.len());
                    match kind {
                        0 if i < buf.len() => buf[i] = byte,
                        1 => buf.insert(i, byte),
                        _ if i < buf.len() => {
                            buf.remove(i);
                        }
                        _ => {}
                    }
                }
                if cut.index(4) == 0 {
                    let keep = cut.index(buf.len() + 1);
                    buf.truncate(keep);
                }
                buf
            })
    }

    /// Hands out its bytes in the given chunks, then EOF: a client's writes as they arrive.
    struct Chunks(Vec<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(chunk) = self.0.first_mut() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                chunk.drain(..n);
                if chunk.is_empty() {
                    self.0.remove(0);
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn read_in_chunks(bytes: &[u8], cuts: &[prop::sample::Index]) -> Head {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        let chunks = at
            .windows(2)
            .map(|w| bytes[w[0]..w[1]].to_vec())
            .filter(|c| !c.is_empty())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let routes = ArcSwap::from_pointee(routes());
            let soon = Instant::now() + Duration::from_secs(60);
            let wait = Wait {
                first_byte: soon,
                whole: Some(soon),
            };
            let mut conn = Chunks(chunks);
            read_head(&mut conn, &routes, wait, Duration::from_secs(60))
                .await
                .unwrap()
        })
    }

    // proptest's default config: 256 cases, or PROPTEST_CASES for a longer run.
    proptest! {
        #[test]
        fn arbitrary_bytes_are_served_only_as_httparse_reads_them(buf in prop::collection::vec(any::<u8>(), 0..2048)) {
            let parsed = parse_all(&buf);
            check_stream_law(&buf, &parsed)?;
        }

        #[test]
        fn mutated_heads_are_served_only_as_httparse_reads_them(buf in mutated()) {
            let parsed = parse_all(&buf);
            check_stream_law(&buf, &parsed)?;
        }

        #[test]
        fn a_head_read_in_any_chunks_is_classified_as_if_read_at_once(
            buf in mutated(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let whole = parse_all(&buf);
            match read_in_chunks(&buf, &cuts) {
                Head::Stream(req, read) => {
                    prop_assert!(matches!(&whole, Parsed::Stream(r) if r.raw_path() == req.raw_path()), "{whole:?}");
                    check_stream_law(&read, &Parsed::Stream(req))?;
                }
                other => prop_assert!(!matches!(whole, Parsed::Stream(_)), "{:?}", std::mem::discriminant(&other)),
            }
        }
    }

    #[test]
    fn a_plain_subscription_is_served_here() {
        let head = b"GET /sse/o/7?format=snapshot HTTP/1.1\r\nHost: gateway\r\nAccept: text/event-stream\r\n\r\n";
        assert!(matches!(parse_all(head), Parsed::Stream(r) if r.uri.path() == "/sse/o/7"));
        // Bare LF line endings, as httparse accepts.
        assert!(matches!(
            parse_all(b"GET /sse/doc HTTP/1.1\nHost: g\n\n"),
            Parsed::Stream(_)
        ));
    }

    #[test]
    fn anything_unusual_goes_to_pingora_once_whole() {
        let pass = [
            &b"POST /sse/doc HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n"[..],
            b"GET /sse/doc HTTP/1.0\r\n\r\n",
            b"GET /api HTTP/1.1\r\nHost: g\r\n\r\n",
            b"GET /sse/doc HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            b"GET /sse/doc HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            // pingora refuses these (400): the direct path must not serve them either.
            b"GET /sse/doc HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /sse/doc HTTP/1.1\r\nHost: u@a\r\n\r\n",
            b"GET http://a/sse/doc HTTP/1.1\r\nHost: b\r\n\r\n",
            // Not a request line pingora could escape: its 400 comes at once.
            b"\x16\x03\x01\x02\x00",
        ];
        for head in pass {
            assert!(
                matches!(parse_all(head), Parsed::Pass),
                "{:?}",
                head.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn a_head_is_not_passed_on_before_it_is_whole() {
        let partial = [
            &b"GET /api HTTP/1.1\r\nHost: g\r\n"[..],
            b"POST /x HTTP/1.1\r\n",
            b"GE",
            // pingora escapes this target and parses again: it needs the whole head.
            b"GET /a b HTTP/1.1\r\nHost: g\r\n",
        ];
        for head in partial {
            assert!(
                matches!(parse_all(head), Parsed::Partial),
                "{:?}",
                head.escape_ascii().to_string()
            );
        }
        assert!(matches!(
            parse_all(b"GET /a b HTTP/1.1\r\nHost: g\r\n\r\n"),
            Parsed::Pass
        ));
    }

    #[test]
    fn a_non_get_on_a_stream_path_waits_to_be_whole_then_goes_to_pingora() {
        for method in ["POST", "HEAD", "OPTIONS", "DELETE", "get"] {
            let whole = format!("{method} /sse/doc HTTP/1.1\r\nHost: g\r\n\r\n");
            let partial = &whole[..whole.len() - 2];
            assert!(
                matches!(parse_all(partial.as_bytes()), Parsed::Partial),
                "{method}"
            );
            assert!(
                matches!(parse_all(whole.as_bytes()), Parsed::Pass),
                "{method}"
            );
        }
    }

    #[test]
    fn what_pingora_refuses_at_once_is_passed_before_the_head_ends() {
        // pingora answers these 400 without reading on, so there is nothing to wait for.
        let early = [
            &b"GET /sse/doc HTTP/1.1\r\nX Bad: 1\r\n"[..],
            b"GET /sse/doc HTTP/1.1\r\nHost: g\x01\r\n",
            b"\x16\x03\x01",
        ];
        for head in early {
            assert!(
                matches!(parse_all(head), Parsed::Pass),
                "{:?}",
                head.escape_ascii().to_string()
            );
        }
    }

    /// Found by `mutated_heads_…` in CI: `/sse/doc?#format=snapshot` was served as
    /// `/sse/doc?`, the fragment dropped by the URI parser.
    #[test]
    fn a_target_with_a_fragment_goes_to_pingora() {
        for target in ["/sse/doc?#format=snapshot", "/sse/doc#x", "/sse/o/1?a=1#b"] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: g\r\n\r\n");
            assert!(
                matches!(parse_all(head.as_bytes()), Parsed::Pass),
                "{target}"
            );
        }
    }

    #[test]
    fn a_body_an_upgrade_or_an_expectation_needs_pingora() {
        let needs = |name: &str, value: &[u8]| needs_pingora(&httparse::Header { name, value });
        assert!(needs("Content-Length", b"5"));
        assert!(needs("content-length", b"00"));
        assert!(needs("Transfer-Encoding", b"chunked"));
        assert!(needs("UPGRADE", b"websocket"));
        assert!(needs("Expect", b"100-continue"));
        assert!(!needs("Content-Length", b"0"));
        assert!(!needs("Accept", b"text/event-stream"));
        assert!(!needs("Connection", b"upgrade"));
        for header in [
            "Content-Length: 3",
            "Transfer-Encoding: chunked",
            "Expect: 100-continue",
        ] {
            let head = format!("GET /sse/doc HTTP/1.1\r\nHost: g\r\n{header}\r\n\r\n");
            assert!(
                matches!(parse_all(head.as_bytes()), Parsed::Pass),
                "{header}"
            );
        }
        let zero = b"GET /sse/doc HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse_all(zero), Parsed::Stream(_)));
    }

    /// A kept-alive connection after a request pingora answered: no deadline for the whole
    /// head until its first byte, then `head_timeout` from there.
    fn kept_alive(first_byte: Duration) -> Wait {
        Wait {
            first_byte: Instant::now() + first_byte,
            whole: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_second_head_is_read_like_the_first() {
        let routes = ArcSwap::from_pointee(routes());
        let mut conn = Chunks(vec![
            b"GET /sse/o/9 HTTP/1.1\r\nHo".to_vec(),
            b"st: g\r\nAccept: text/event-stream\r\n".to_vec(),
            b"\r\n".to_vec(),
        ]);
        let wait = kept_alive(Duration::from_secs(60));
        let head = read_head(&mut conn, &routes, wait, Duration::from_secs(10)).await;
        assert!(matches!(head, Ok(Head::Stream(r, _)) if r.uri.path() == "/sse/o/9"));

        let mut conn = Chunks(vec![b"GET /api HTTP/1.1\r\n\r\n".to_vec()]);
        let head = read_head(&mut conn, &routes, wait, Duration::from_secs(10)).await;
        assert!(matches!(head, Ok(Head::Pass(read)) if read == b"GET /api HTTP/1.1\r\n\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_connection_silent_past_its_keepalive_is_gone() {
        let routes = ArcSwap::from_pointee(routes());
        let start = Instant::now();
        let mut conn = Silent;
        let wait = kept_alive(Duration::from_secs(60));
        let head = read_head(&mut conn, &routes, wait, Duration::from_secs(10)).await;
        assert!(matches!(head, Ok(Head::Gone)));
        assert_eq!(start.elapsed(), Duration::from_secs(60));

        // Begun but never finished: cut off, counted in bytes.
        let mut conn = Chunks(vec![b"GET /sse/doc HTTP/1.1\r\n".to_vec()]);
        let head = read_head(&mut conn, &routes, wait, Duration::from_secs(10)).await;
        assert!(matches!(head, Ok(Head::Cut(23))));
    }

    /// A connection that never sends anything and never closes.
    struct Silent;

    impl AsyncRead for Silent {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    #[test]
    fn a_head_past_the_limit_is_too_large() {
        let mut head = b"GET /sse/doc HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(MAX_HEAD + 10, b'a');
        assert!(matches!(read_in_chunks(&head, &[]), Head::TooLarge));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_be_whole_by_its_deadline_however_it_drips() {
        // One byte every 100 ms, for ever: the deadline counts the whole head.
        struct Drip(tokio::time::Interval);
        impl AsyncRead for Drip {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                std::task::ready!(self.0.poll_tick(cx));
                buf.put_slice(b"a");
                Poll::Ready(Ok(()))
            }
        }
        let routes = ArcSwap::from_pointee(routes());
        let start = Instant::now();
        let wait = Wait {
            first_byte: start + Duration::from_secs(60),
            whole: None,
        };
        let mut conn = Drip(tokio::time::interval(Duration::from_millis(100)));
        let head = read_head(&mut conn, &routes, wait, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(matches!(head, Head::Cut(n) if n > 50));
        assert!(
            start.elapsed() <= Duration::from_secs(11),
            "{:?}",
            start.elapsed()
        );
    }
}
