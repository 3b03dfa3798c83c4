//! TLS on the client listener: HTTP/2 by ALPN, HTTP/1.1 beside it; renewed certificates load
//! on SIGHUP.

use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::support::*;

/// A self-signed certificate for localhost, written as PEM files; returns the certificate PEM.
pub(crate) fn certificate(dir: &std::path::Path, name: &str) -> String {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
    let pem = cert.cert.pem();
    std::fs::write(dir.join(format!("{name}.crt")), &pem).expect("write the certificate");
    std::fs::write(
        dir.join(format!("{name}.key")),
        cert.signing_key.serialize_pem(),
    )
    .expect("write the key");
    pem
}

/// A gateway serving `/sse/doc` (polling `up`'s `/doc`) over TLS with the certificate `a`
/// in `dir`, and what `extra` adds to its config; returns it and the certificate PEM.
pub(crate) async fn tls_gateway(
    up: &Upstream,
    dir: &std::path::Path,
    extra: impl FnOnce(Cfg) -> Cfg,
) -> (Gateway, String) {
    let pem = certificate(dir, "a");
    let cfg = Cfg::new(up)
        .tls(&dir.join("a.crt"), &dir.join("a.key"))
        .stream("/sse/doc", "/doc")
        .interval("100ms");
    (Gateway::start(&extra(cfg)).await, pem)
}

pub(crate) fn tls_client(pem: &str) -> reqwest::ClientBuilder {
    pingora::tls::install_default_crypto_provider();
    reqwest::Client::builder().no_proxy().add_root_certificate(
        reqwest::Certificate::from_pem(pem.as_bytes()).expect("the certificate PEM"),
    )
}

pub(crate) fn client_trusting(pem: &str) -> reqwest::Client {
    tls_client(pem).build().expect("a TLS client")
}

pub(crate) async fn subscribe(
    client: &reqwest::Client,
    port: u16,
) -> reqwest::Result<reqwest::Response> {
    client
        .get(format!("https://localhost:{port}/sse/doc"))
        .header("accept", "text/event-stream")
        .send()
        .await
}

#[tokio::test]
async fn an_sse_stream_over_http2_with_tls() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c).await;
    let client = client_trusting(&pem);
    let resp = subscribe(&client, gw.port).await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut c = SseClient::new(resp);
    assert_eq!(c.snapshot().await, json!({"v": 1}));
    up.set("/doc", json!({"v": 2}));
    assert_eq!(c.next_document().await, json!({"v": 2}));

    // Many streams share one connection.
    let mut more = Vec::new();
    for _ in 0..8 {
        let mut s = SseClient::new(subscribe(&client, gw.port).await.unwrap());
        s.snapshot().await;
        more.push(s);
    }

    // A renewed certificate is served after SIGHUP, without restarting.
    let renewed = certificate(dir.path(), "b");
    std::fs::rename(dir.path().join("b.crt"), dir.path().join("a.crt")).unwrap();
    std::fs::rename(dir.path().join("b.key"), dir.path().join("a.key")).unwrap();
    gw.watching().await;
    gw.signal("HUP");
    let fresh = client_trusting(&renewed);
    eventually("the renewed certificate is served", || async {
        subscribe(&fresh, gw.port).await.ok().map(|_| ())
    })
    .await;
    // Streams opened before the renewal carry on.
    up.set("/doc", json!({"v": 3}));
    assert_eq!(c.next_document().await, json!({"v": 3}));
}

#[tokio::test]
async fn over_http1_with_tls_a_stream_and_a_proxied_request_are_both_served() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.set("/api/info", json!({"name": "legacy"}));
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), Cfg::proxy).await;
    let client = tls_client(&pem).http1_only().build().unwrap();

    let resp = subscribe(&client, gw.port).await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut c = SseClient::new(resp);
    assert_eq!(c.snapshot().await, json!({"v": 1}));
    up.set("/doc", json!({"v": 2}));
    assert_eq!(c.next_document().await, json!({"v": 2}));

    // The head read for the stream check goes back in front of the TLS stream for pingora.
    let api = client
        .get(format!("https://localhost:{}/api/info", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    assert_eq!(
        api.json::<serde_json::Value>().await.unwrap(),
        json!({"name": "legacy"})
    );
    let seen = up.requests("/api/info").await;
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
}

/// A TLS connection to the gateway, trusting `pem`, offering `alpn`.
pub(crate) async fn tls_connect(
    pem: &str,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    pingora::tls::install_default_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pem.as_bytes()).expect("the certificate PEM"))
        .expect("a trusted root");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from("localhost").expect("a server name"),
            tcp,
        )
        .await
        .expect("a TLS handshake")
}

#[tokio::test]
async fn an_http2_connection_that_opens_no_stream_is_closed_after_keepalive() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c.limit("keepalive", "1s")).await;
    let mut conn = tls_connect(&pem, gw.port, b"h2").await;
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client preface, an empty SETTINGS frame (RFC 9113 §3.4, §6.5), then nothing.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    // The gateway's own SETTINGS, and its ACK of ours, then the close.
    let seen = until_closed(&mut conn).await;
    assert!(!seen.is_empty(), "the gateway spoke HTTP/2 first");
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_is_closed_after_the_head_timeout() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c.limit("head_timeout", "1s")).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    // The first bytes of a TLS record header, then silence.
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    assert_eq!(until_closed(&mut tcp).await, "");
    // A client that completes its handshake is served.
    let resp = subscribe(&client_trusting(&pem), gw.port).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// Reads until `marker` has come; returns all read.
async fn read_until(conn: &mut (impl AsyncRead + Unpin), marker: &str) -> String {
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while !String::from_utf8_lossy(&seen).contains(marker) {
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {marker:?} in {:?}", String::from_utf8_lossy(&seen)));
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn over_http1_with_tls_a_stream_after_proxied_requests_on_one_connection_is_served() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.set("/api/info", json!({"name": "legacy"}));
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), Cfg::proxy).await;
    let mut conn = tls_connect(&pem, gw.port, b"http/1.1").await;
    // pingora answers these and hands the connection back each time.
    for _ in 0..2 {
        conn.write_all(b"GET /api/info HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut conn, "legacy").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    conn.write_all(
        b"GET /sse/doc HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_until(&mut conn, "data: {\"v\":1}").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("event: snapshot"), "{text}");
}

/// Over TLS a slot is the TLS direct path's cost, so a client on pingora's session (HTTP/1.0)
/// takes 8 of them (41.5 KB against 5.6 KB): with 9, one direct client fits beside it and the
/// next is told the gateway is overloaded.
#[tokio::test]
async fn over_tls_a_subscription_through_pingoras_session_takes_8_slots() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, pem) = tls_gateway(&up, dir.path(), |c| c.limit("max_clients", 9)).await;
    let mut heavy = tls_connect(&pem, gw.port, b"http/1.1").await;
    heavy
        .write_all(b"GET /sse/doc HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut heavy, "event: snapshot").await;
    assert_eq!(gw.metric("sse_gateway_client_slots").await, Some(8.0));
    assert_eq!(
        gw.metric("sse_gateway_clients_pingora_session").await,
        Some(1.0)
    );

    let client = client_trusting(&pem);
    let light = subscribe(&client, gw.port).await.unwrap();
    assert_eq!(light.status(), 200);
    let mut light = SseClient::new(light);
    assert_eq!(light.snapshot().await, json!({"v": 1}));
    assert_eq!(gw.metric("sse_gateway_client_slots").await, Some(9.0));

    let mut refused = SseClient::new(subscribe(&client, gw.port).await.unwrap());
    assert_eq!(refused.next_event().await.event, "overloaded");
}
