//! A stream works however the client's connection arrives: fresh or after a proxied request on
//! the same kept-alive connection (both served on the socket directly), or over HTTP/1.0
//! (served through pingora's proxy session). And every connection has a deadline: a head must
//! arrive whole within `limits.head_timeout`, a kept-alive connection waits `limits.keepalive`
//! for its next request.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// `/sse/doc`, polling `up`'s `/doc` every 100 ms; every other request is proxied to `up`.
fn gateway_cfg(up: &Upstream) -> Cfg {
    Cfg::new(up)
        .stream("/sse/doc", "/doc")
        .interval("100ms")
        .proxy()
}

#[tokio::test]
async fn a_stream_after_a_proxied_request_on_the_same_connection_gets_every_change() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.set("/api/info", json!({"name": "legacy"}));
    let gw = Gateway::start(&gateway_cfg(&up)).await;

    // One TCP connection, two requests on it: hyper's connection-level client cannot open a
    // second one.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let (mut conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(driver);

    let api = http::Request::get("/api/info")
        .header("host", "gateway")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = conn.send_request(api).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"name": "legacy"})
    );

    conn.ready().await.unwrap();
    let sub = http::Request::get("/sse/doc")
        .header("host", "gateway")
        .header("accept", "text/event-stream")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = conn.send_request(sub).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut client = SseClient::from_body(resp.into_body().into_data_stream());
    assert_eq!(client.snapshot().await, json!({"v": 1}));
    up.set("/doc", json!({"v": 2, "w": [1]}));
    assert_eq!(client.next_document().await, json!({"v": 2, "w": [1]}));
}

#[tokio::test]
async fn an_http_1_0_client_gets_the_stream_until_the_connection_closes() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&gateway_cfg(&up)).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    s.write_all(b"GET /sse/doc HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the snapshot");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            if text.contains("data: {\"v\":1}") {
                return text;
            }
        }
    })
    .await
    .expect("the snapshot over HTTP/1.0");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    // No chunk framing on HTTP/1.0: the body is the event stream itself.
    assert!(body.starts_with("retry: "), "{body:?}");
    assert!(body.contains("event: snapshot\n"), "{body:?}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_holds_up_no_one() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&gateway_cfg(&up)).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
                .await
                .unwrap(),
        );
    }
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(client.snapshot().await, json!({"v": 1}));
    drop(silent);
}

#[tokio::test]
async fn a_subscription_with_a_long_head_still_gets_its_stream() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&gateway_cfg(&up)).await;
    // Far more than a browser sends, and under the 64 KiB a head may take.
    let big = "x".repeat(20_000);
    let mut client = gw.sse_with("/sse/doc", &[("x-padding", &big)]).await;
    assert_eq!(client.snapshot().await, json!({"v": 1}));
    up.set("/doc", json!({"v": 2}));
    assert_eq!(client.next_document().await, json!({"v": 2}));
}

/// `gateway_cfg` with second-long deadlines.
fn impatient_cfg(up: &Upstream) -> Cfg {
    gateway_cfg(up)
        .limit("head_timeout", "1s")
        .limit("keepalive", "1s")
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

/// Reads one response with a `Content-Length` body; returns its head and body.
async fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .expect("a Content-Length");
                if body.len() >= length {
                    return (head.to_owned(), body.to_owned());
                }
            }
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a whole response")
}

#[tokio::test]
async fn a_half_sent_head_is_closed_after_the_head_timeout() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.set("/api/info", json!({"name": "legacy"}));
    let gw = Gateway::start(&impatient_cfg(&up)).await;
    // A stream path, and a path for the proxy.
    for path in ["/sse/doc", "/api/info"] {
        let mut s = connect(gw.port).await;
        let head = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\nAccept: text/event-stream\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(until_closed(&mut s).await, "", "{path}");
    }
    // Whole heads are still served.
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(client.snapshot().await, json!({"v": 1}));
}

#[tokio::test]
async fn a_head_dripped_a_byte_at_a_time_is_closed_at_the_head_timeout() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&impatient_cfg(&up)).await;
    let (mut rd, mut wr) = connect(gw.port).await.into_split();
    // Each byte comes long before any per-read timeout would fire; only a deadline for the
    // whole head ends this.
    let drip = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut sent = wr
            .write_all(b"GET /api/info HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
            .await;
        while sent.is_ok() {
            tick.tick().await;
            sent = wr.write_all(b"a").await;
        }
    });
    assert_eq!(until_closed(&mut rd).await, "");
    drip.abort();
}

#[tokio::test]
async fn a_kept_alive_connection_with_no_next_request_is_closed_after_keepalive() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.set("/api/info", json!({"name": "legacy"}));
    let gw = Gateway::start(&impatient_cfg(&up)).await;
    let mut s = connect(gw.port).await;
    // Two proxied requests on one connection: it is kept alive between them.
    for _ in 0..2 {
        s.write_all(b"GET /api/info HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(body.contains("legacy"), "{body}");
    }
    assert_eq!(until_closed(&mut s).await, "");
}

#[tokio::test]
async fn a_head_over_64_kib_gets_431() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&gateway_cfg(&up)).await;
    let mut s = connect(gw.port).await;
    let big = "x".repeat(70_000);
    let head = format!("GET /sse/doc HTTP/1.1\r\nHost: gateway\r\nX-Padding: {big}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let text = until_closed(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}
