//! HTTP/2 over TLS: subscriptions are served on their own streams of a shared connection, which
//! keeps its limits and closes with GOAWAY.

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::Reason;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::support::*;
use crate::tls::{client_trusting, subscribe, tls_client, tls_connect, tls_gateway};

const APP: &str = "https://app.example.com";

/// An HTTP/2 connection to the gateway (the `h2` crate, as hyper uses it); its codec runs in a
/// task whose handle says how the connection ended.
async fn connect(
    pem: &str,
    port: u16,
) -> (
    SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = tls_connect(pem, port, b"h2").await;
    let (send, conn) = h2::client::handshake(tls)
        .await
        .expect("an HTTP/2 handshake");
    (send, tokio::spawn(conn))
}

/// Opens `path` as an event stream on the connection; returns the stream's request side (to
/// reset it) and a client reading its events.
async fn open(send: &SendRequest<Bytes>, path: &str) -> (h2::SendStream<Bytes>, SseClient) {
    open_with(send, path, true).await
}

/// `open`, and with `release` false the client gives no window back (sends no WINDOW_UPDATE:
/// events here are far below the 64 KB window), so it has nothing to write when the gateway
/// closes the connection.
async fn open_with(
    send: &SendRequest<Bytes>,
    path: &str,
    release: bool,
) -> (h2::SendStream<Bytes>, SseClient) {
    let req = http::Request::get(format!("https://localhost{path}"))
        .header("accept", "text/event-stream")
        .body(())
        .expect("a request");
    let mut send = send.clone().ready().await.expect("room for a stream");
    let (response, stream) = send.send_request(req, true).expect("a stream");
    let response = response.await.expect("a response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = futures_util::stream::unfold(response.into_body(), move |mut body| async move {
        let data = body.data().await?;
        if let (Ok(bytes), true) = (&data, release) {
            let _ = body.flow_control().release_capacity(bytes.len());
        }
        Some((data, body))
    });
    (stream, SseClient::from_body(body))
}

#[tokio::test]
async fn events_arrive_over_http2_in_curl() {
    let up = Upstream::json("/doc", json!({"v": 1, "items": [1, 2]})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, _pem) = tls_gateway(&up, dir.path(), |c| c).await;
    let mut curl = Command::new("curl")
        .args(["--http2", "-sSNv", "--cacert"])
        .arg(dir.path().join("a.crt"))
        .args(["-H", "accept: text/event-stream"])
        .arg(format!("https://localhost:{}/sse/doc", gw.port))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl runs");
    let stdout = curl.stdout.take().expect("curl's output");
    let body = futures_util::stream::unfold(stdout, |mut out| async move {
        let mut buf = vec![0u8; 8192];
        match out.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), out))
            }
            Err(e) => Some((Err(e), out)),
        }
    });
    let mut c = SseClient::from_body(body);
    assert_eq!(c.snapshot().await, json!({"v": 1, "items": [1, 2]}));
    up.set("/doc", json!({"v": 2, "items": [1, 2, 3]}));
    assert_eq!(c.next_document().await, json!({"v": 2, "items": [1, 2, 3]}));

    curl.start_kill().expect("curl stops");
    let mut trace = String::new();
    let mut stderr = curl.stderr.take().expect("curl's trace");
    stderr.read_to_string(&mut trace).await.expect("the trace");
    assert!(trace.contains("< HTTP/2 200"), "{trace}");
}

#[tokio::test]
async fn a_client_resetting_one_stream_leaves_the_connections_other_streams_running() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c).await;
    let (send, _conn) = connect(&pem, gw.port).await;
    let (mut closing, mut gone) = open(&send, "/sse/doc").await;
    let (_kept, mut staying) = open(&send, "/sse/doc").await;
    assert_eq!(gone.snapshot().await, json!({"v": 1}));
    assert_eq!(staying.snapshot().await, json!({"v": 1}));
    assert_eq!(gw.metric("sse_gateway_client_slots").await, Some(2.0));

    // What `EventSource.close()` in a browser on HTTP/2 does.
    closing.send_reset(Reason::CANCEL);
    eventually("the reset stream's client is gone", || async {
        (gw.metric("sse_gateway_client_slots").await == Some(1.0)).then_some(())
    })
    .await;
    up.set("/doc", json!({"v": 2}));
    assert_eq!(staying.next_document().await, json!({"v": 2}));

    // The connection still takes new streams.
    let (_new, mut fresh) = open(&send, "/sse/doc").await;
    assert_eq!(fresh.snapshot().await, json!({"v": 2}));
    assert_eq!(gw.metric("sse_gateway_connections").await, Some(1.0));
}

#[tokio::test]
async fn on_shutdown_http2_streams_get_end_and_the_connection_a_goaway() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, pem) = tls_gateway(&up, dir.path(), |c| c.retry("1s").shutdown_grace("2s")).await;
    let (send, conn) = connect(&pem, gw.port).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (_req, mut c) = open_with(&send, "/sse/doc", false).await;
        c.snapshot().await;
        clients.push((_req, c));
    }
    gw.signal("TERM");
    for (_, c) in &mut clients {
        let end = c.next_of("end").await;
        let retry = end.retry.expect("a retry");
        assert!(
            retry >= Duration::from_secs(1) && retry <= Duration::from_secs(2),
            "{retry:?}"
        );
        assert!(
            c.try_next_event().await.is_none(),
            "the stream ends cleanly"
        );
    }
    // GOAWAY: the connection ends, with no protocol error, and takes no new stream. The client
    // may still be writing as the gateway closes (h2 gives a stream's window back when the
    // stream ends): that write meets a closed socket, an I/O error on the client's side only.
    let ended = tokio::time::timeout(DEADLINE, conn)
        .await
        .expect("the connection ends")
        .expect("the codec task");
    if let Err(e) = &ended {
        assert!(e.is_io(), "{e:?}");
    }
    let refused = match send.clone().ready().await {
        Ok(mut ready) => {
            let req = http::Request::get("https://localhost/sse/doc")
                .body(())
                .unwrap();
            ready.send_request(req, true).map(|_| ())
        }
        Err(e) => Err(e),
    };
    let refused = refused.expect_err("a stream after GOAWAY");
    assert!(refused.is_go_away(), "{refused:?}");
    assert_eq!(refused.reason(), Some(Reason::NO_ERROR), "{refused:?}");
    assert!(gw.exit_status(Duration::from_secs(10)).await.success());
}

#[tokio::test]
async fn http2_streams_take_one_client_slot_each_and_share_one_connection() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c.limit("max_clients", 3)).await;
    let client = client_trusting(&pem);
    let mut held = Vec::new();
    for _ in 0..3 {
        let resp = subscribe(&client, gw.port).await.unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        let mut s = SseClient::new(resp);
        assert_eq!(s.snapshot().await, json!({"v": 1}));
        held.push(s);
    }
    let mut fourth = SseClient::new(subscribe(&client, gw.port).await.unwrap());
    assert_eq!(fourth.next_event().await.event, "overloaded");
    assert_eq!(gw.metric("sse_gateway_client_slots").await, Some(3.0));
    assert_eq!(
        gw.metric("sse_gateway_clients_pingora_session").await,
        Some(0.0)
    );
    assert_eq!(gw.metric("sse_gateway_connections").await, Some(1.0));
}

#[tokio::test]
async fn beside_a_stream_other_requests_on_the_connection_are_proxied_or_answered() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.set("/api/info", json!({"name": "legacy"}));
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| {
        c.proxy().cors(json!({"origins": [APP]}))
    })
    .await;
    let client = client_trusting(&pem);
    let mut stream = SseClient::new(subscribe(&client, gw.port).await.unwrap());
    assert_eq!(stream.snapshot().await, json!({"v": 1}));

    let api = client
        .get(format!("https://localhost:{}/api/info", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(api.version(), reqwest::Version::HTTP_2);
    assert_eq!(api.status(), 200);
    assert_eq!(
        api.json::<serde_json::Value>().await.unwrap(),
        json!({"name": "legacy"})
    );
    let seen = up.requests("/api/info").await;
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");

    // A preflight is answered by the gateway itself, on its own stream, with its CORS headers.
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("https://localhost:{}/sse/doc", gw.port),
        )
        .header("origin", APP)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.version(), reqwest::Version::HTTP_2);
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], APP);

    // The stream carried on beside them, on the same connection.
    up.set("/doc", json!({"v": 2}));
    assert_eq!(stream.next_document().await, json!({"v": 2}));
    assert_eq!(gw.metric("sse_gateway_connections").await, Some(1.0));
}

/// Version `n` of a document of about 300 KB: larger than h2's codec buffers and than its
/// default 64 KB windows.
fn rows(n: usize) -> serde_json::Value {
    let rows: Vec<String> = (0..6000)
        .map(|i| format!("row {i:05} of version {n}, wider than any buffer or window"))
        .collect();
    json!({ "rows": rows })
}

/// h2's codec buffers are taken for a read or a write and given back between them
/// (vendor/h2/SSE-GATEWAY.md): what is larger than any of them still crosses one connection
/// whole, a 300 KB snapshot and its change on a stream, a 1 MB proxied body, and 30 KB headers
/// each way (header blocks that need CONTINUATION frames).
#[tokio::test]
async fn documents_bodies_and_headers_larger_than_the_codec_buffers_cross_whole() {
    let up = Upstream::json("/doc", rows(1)).await;
    let body: String = (0..131_072).map(|i| format!("{i:07}\n")).collect();
    // 30,000 letters are more than 16 KB even Huffman-coded: a header block of more than one
    // frame.
    let big_header: String = (0..30_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    up.set_text("/api/big", &body);
    up.fail("/api/big", 200, &[("x-big", &big_header)]);
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c.proxy()).await;
    let client = tls_client(&pem)
        .http2_max_header_list_size(256 * 1024)
        .build()
        .unwrap();

    let mut stream = SseClient::new(subscribe(&client, gw.port).await.unwrap());
    assert_eq!(stream.snapshot().await, rows(1));

    let note: String = big_header.chars().rev().collect();
    let api = client
        .get(format!("https://localhost:{}/api/big", gw.port))
        .header("x-note", &note)
        .send()
        .await
        .unwrap();
    assert_eq!(api.version(), reqwest::Version::HTTP_2);
    assert_eq!(api.status(), 200);
    assert_eq!(api.headers()["x-big"], big_header.as_str());
    assert_eq!(api.text().await.unwrap(), body);
    assert_eq!(up.requests("/api/big").await[0].headers["x-note"], note);

    up.set("/doc", rows(2));
    assert_eq!(stream.next_document().await, rows(2));
}

/// A client with h2's default 64 KB windows takes a 300 KB snapshot in many windows: the
/// gateway's stream waits for each WINDOW_UPDATE and is woken by it (vendor/h2 keeps a stream
/// from waking itself when it asks for capacity, never when the client grants it), on two
/// streams sharing the connection's window at once.
#[tokio::test]
async fn a_snapshot_larger_than_the_client_s_window_arrives_as_the_client_reads() {
    let up = Upstream::json("/doc", rows(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c).await;
    let (send, _conn) = connect(&pem, gw.port).await;
    let (_a, mut first) = open(&send, "/sse/doc").await;
    let (_b, mut second) = open(&send, "/sse/doc").await;
    // Read side by side: the connection's 64 KB window is shared, and data one stream holds
    // unread keeps it from the other.
    let (a, b) = tokio::join!(first.snapshot(), second.snapshot());
    assert_eq!((a, b), (rows(1), rows(1)));

    up.set("/doc", rows(2));
    let (a, b) = tokio::join!(first.next_document(), second.next_document());
    assert_eq!((a, b), (rows(2), rows(2)));
}

/// The connection's limit on concurrent streams is in its SETTINGS, and that many subscriptions
/// run on it at once.
#[tokio::test]
async fn an_http2_connection_runs_up_to_its_advertised_100_streams() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c).await;
    let (send, _conn) = connect(&pem, gw.port).await;
    let mut streams = Vec::new();
    for _ in 0..100 {
        let (req, mut c) = open(&send, "/sse/doc").await;
        assert_eq!(c.snapshot().await, json!({"v": 1}));
        streams.push((req, c));
    }
    assert_eq!(send.current_max_send_streams(), 100);
    assert_eq!(gw.metric("sse_gateway_connections").await, Some(1.0));
    up.set("/doc", json!({"v": 2}));
    for (_, c) in &mut streams {
        assert_eq!(c.next_document().await, json!({"v": 2}));
    }
}

/// HTTP/2 frames written and read by hand, for what a well-behaved client (the `h2` crate)
/// will not send: streams reset as fast as they open, requests without an authority.
mod raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;

    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    /// What the gateway sent, as far as these tests look.
    #[derive(Debug, PartialEq)]
    pub enum Seen {
        /// A response head, with its status when it is one of HPACK's static-table entries.
        Headers {
            stream: u32,
            status: Option<u16>,
        },
        Reset {
            stream: u32,
            reason: u32,
        },
        GoAway {
            reason: u32,
        },
        Closed,
    }

    pub struct Conn {
        tls: TlsStream<TcpStream>,
        out: Vec<u8>,
    }

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).expect("a short frame");
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// An HPACK literal without indexing, its name from the static table (index < 15) and
    /// its value under 127 bytes, not Huffman-coded.
    fn literal(block: &mut Vec<u8>, name_index: u8, value: &str) {
        block.push(name_index);
        block.push(u8::try_from(value.len()).expect("a short value"));
        block.extend_from_slice(value.as_bytes());
    }

    impl Conn {
        /// The preface and an empty SETTINGS, over TLS with ALPN h2.
        pub async fn open(pem: &str, port: u16) -> Conn {
            let tls = crate::tls::tls_connect(pem, port, b"h2").await;
            let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            frame(&mut out, SETTINGS, 0, 0, &[]);
            Conn { tls, out }
        }

        /// Queues GET `path` on `stream`, with `:authority: localhost` or none at all.
        pub fn get(&mut self, stream: u32, path: &str, authority: bool) {
            // :method GET and :scheme https are static-table entries 2 and 7.
            let mut block = vec![0x82, 0x87];
            literal(&mut block, 4, path);
            if authority {
                literal(&mut block, 1, "localhost");
            }
            frame(
                &mut self.out,
                HEADERS,
                END_HEADERS | END_STREAM,
                stream,
                &block,
            );
        }

        pub fn reset(&mut self, stream: u32) {
            frame(&mut self.out, RST_STREAM, 0, stream, &CANCEL.to_be_bytes());
        }

        /// Sends everything queued in one write, so the gateway reads it all at once.
        pub async fn flush(&mut self) {
            let out = std::mem::take(&mut self.out);
            self.tls.write_all(&out).await.expect("write frames");
            self.tls.flush().await.expect("flush frames");
        }

        /// The next frame these tests care about; SETTINGS are acknowledged on the way.
        pub async fn next(&mut self) -> Seen {
            loop {
                let mut head = [0u8; 9];
                if self.tls.read_exact(&mut head).await.is_err() {
                    return Seen::Closed;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let (kind, flags) = (head[3], head[4]);
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & !(1 << 31);
                let mut payload = vec![0u8; len];
                if self.tls.read_exact(&mut payload).await.is_err() {
                    return Seen::Closed;
                }
                let word = |at: usize| {
                    u32::from_be_bytes([
                        payload[at],
                        payload[at + 1],
                        payload[at + 2],
                        payload[at + 3],
                    ])
                };
                match kind {
                    HEADERS => {
                        // An indexed field 8 to 14 first: :status 200 .. 500 (RFC 7541 A).
                        const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
                        let status = payload
                            .first()
                            .and_then(|b| b.checked_sub(0x88))
                            .and_then(|i| STATIC.get(usize::from(i)).copied());
                        return Seen::Headers { stream, status };
                    }
                    RST_STREAM => {
                        return Seen::Reset {
                            stream,
                            reason: word(0),
                        }
                    }
                    GOAWAY => return Seen::GoAway { reason: word(4) },
                    SETTINGS if flags & ACK == 0 => {
                        frame(&mut self.out, SETTINGS, ACK, 0, &[]);
                        self.flush().await;
                    }
                    _ => {}
                }
            }
        }

        /// Frames up to the GOAWAY (or the connection's end), that one included.
        pub async fn until_goaway(&mut self) -> Vec<Seen> {
            let mut seen = Vec::new();
            loop {
                let next = self.next().await;
                let last = matches!(next, Seen::GoAway { .. } | Seen::Closed);
                seen.push(next);
                if last {
                    return seen;
                }
            }
        }
    }
}

/// The "rapid reset" flood (CVE-2023-44487): streams opened and reset at once cost the
/// gateway work for each and the client nothing. Past 20 resets of streams not yet taken up
/// the connection gets GOAWAY ENHANCE_YOUR_CALM, and the gateway serves others as before.
#[tokio::test]
async fn a_client_resetting_streams_as_fast_as_it_opens_them_gets_a_goaway() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c).await;
    let mut flood = raw::Conn::open(&pem, gw.port).await;
    for stream in (1..200).step_by(2) {
        flood.get(stream, "/sse/doc", true);
        flood.reset(stream);
    }
    flood.flush().await;
    let seen = flood.until_goaway().await;
    assert_eq!(
        seen.last(),
        Some(&raw::Seen::GoAway {
            reason: raw::ENHANCE_YOUR_CALM
        }),
        "{seen:?}"
    );
    assert_eq!(flood.next().await, raw::Seen::Closed);

    let (send, _conn) = connect(&pem, gw.port).await;
    let (_req, mut c) = open(&send, "/sse/doc").await;
    assert_eq!(c.snapshot().await, json!({"v": 1}));
    eventually(
        "the flood's streams have given their slots back",
        || async { (gw.metric("sse_gateway_client_slots").await == Some(1.0)).then_some(()) },
    )
    .await;
}

/// A request pingora's checks reject (here: no `:authority` and no `Host`) is answered 400 and
/// leaves the connection serving; the 32nd such stream on one connection closes it with GOAWAY
/// ENHANCE_YOUR_CALM.
#[tokio::test]
async fn malformed_requests_get_400_and_32_of_them_close_the_connection() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c).await;
    let mut conn = raw::Conn::open(&pem, gw.port).await;
    conn.get(1, "/sse/doc", false);
    conn.get(3, "/sse/doc", true);
    conn.flush().await;
    let mut first = vec![conn.next().await, conn.next().await];
    first.sort_by_key(|seen| format!("{seen:?}"));
    assert_eq!(
        first,
        [
            raw::Seen::Headers {
                stream: 1,
                status: Some(400)
            },
            raw::Seen::Headers {
                stream: 3,
                status: Some(200)
            },
        ]
    );

    // 31 more, each on a stream of its own, in one write.
    for stream in (5..5 + 2 * 31).step_by(2) {
        conn.get(stream, "/sse/doc", false);
    }
    conn.flush().await;
    let seen = conn.until_goaway().await;
    let refused = seen
        .iter()
        .filter(|s| {
            matches!(
                s,
                raw::Seen::Headers {
                    status: Some(400),
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        seen.last(),
        Some(&raw::Seen::GoAway {
            reason: raw::ENHANCE_YOUR_CALM
        }),
        "{seen:?}"
    );
    // The 32nd's own 400 may lose the race with the GOAWAY that closes the connection.
    assert!((30..=31).contains(&refused), "{seen:?}");

    let (send, _conn) = connect(&pem, gw.port).await;
    let (_req, mut c) = open(&send, "/sse/doc").await;
    assert_eq!(c.snapshot().await, json!({"v": 1}));
}
