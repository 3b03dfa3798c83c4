//! TLS on the client listener: HTTP/2 by ALPN, HTTP/1.1 beside it; renewed certificates load
//! on SIGHUP.

use serde_json::json;

use crate::support::*;

/// A self-signed certificate for localhost, written as PEM files; returns the certificate PEM.
fn certificate(dir: &std::path::Path, name: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = cert.cert.pem();
    std::fs::write(dir.join(format!("{name}.crt")), &pem).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    pem
}

/// A gateway serving `/sse/doc` (polling `up`'s `/doc`) over TLS with the certificate `a`
/// in `dir`, and `extra` config lines; returns it and the certificate PEM.
async fn tls_gateway(up: &Upstream, dir: &std::path::Path, extra: &str) -> (Gateway, String) {
    let pem = certificate(dir, "a");
    let yaml = format!(
        "tls:\n  cert: {0}/a.crt\n  key: {0}/a.key\n{1}{extra}",
        dir.display(),
        config(
            up,
            "  - path: /sse/doc\n    upstream: api\n    poll: /doc\n    interval: 100ms\n"
        )
    );
    (Gateway::start(&yaml).await, pem)
}

fn tls_client(pem: &str) -> reqwest::ClientBuilder {
    pingora::tls::install_default_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
}

fn client_trusting(pem: &str) -> reqwest::Client {
    tls_client(pem).build().unwrap()
}

async fn subscribe(client: &reqwest::Client, port: u16) -> reqwest::Result<reqwest::Response> {
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
    let (gw, pem) = tls_gateway(&up, dir.path(), "").await;
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
    let (gw, pem) = tls_gateway(&up, dir.path(), "proxy: api\n").await;
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
