//! Everything that is not a stream subscription goes to the API unchanged.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

#[tokio::test]
async fn a_post_with_a_body_passes_through_unchanged() {
    let up = Upstream::start().await;
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_string("created #7")
                .insert_header("x-upstream", "yes"),
        )
        .with_priority(1)
        .mount(&up.server)
        .await;
    let gw = Gateway::start(&Cfg::new(&up).stream("/sse/doc", "/doc").proxy()).await;
    let resp = http()
        .post(gw.url("/api/orders?tag=a&tag=b"))
        .header("x-client", "42")
        .header("content-type", "application/json")
        .body(r#"{"item":"tea"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-upstream"], "yes");
    assert_eq!(resp.text().await.unwrap(), "created #7");
    let seen = up.requests("/api/orders").await;
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method.as_str(), "POST");
    assert_eq!(r.url.query(), Some("tag=a&tag=b"));
    assert_eq!(r.headers["x-client"], "42");
    assert_eq!(r.body, br#"{"item":"tea"}"#);
}

#[tokio::test]
async fn a_stream_on_an_api_path_still_serves_the_api_to_old_clients() {
    let up = Upstream::json("/api/prices", json!({"eur": 1.08})).await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream_without_poll("/api/prices")
            .interval("100ms")
            .proxy(),
    )
    .await;
    let resp = http()
        .get(gw.url("/api/prices"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"eur": 1.08})
    );
    let mut client = gw.sse("/api/prices").await;
    assert_eq!(client.snapshot().await, json!({"eur": 1.08}));
}

#[tokio::test]
async fn without_a_proxy_unknown_paths_get_404() {
    let up = Upstream::json("/doc", json!({})).await;
    let gw = Gateway::start(&Cfg::new(&up).stream("/sse/doc", "/doc")).await;
    let resp = http().get(gw.url("/elsewhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("no stream at /elsewhere"));
}

/// A proxy to `up` (and a stream of its `/doc`); `base` is the upstream URL's path.
fn proxy_config(up: &Upstream, base: &str) -> Cfg {
    Cfg::new(up).base(base).stream("/sse/doc", "/doc").proxy()
}

/// A request written by hand (request line and headers), so nothing normalises it on the way.
async fn raw(port: u16, head: &str) -> (u16, String) {
    raw_request(port, head, Duration::from_secs(5)).await
}

fn header<'a>(r: &'a wiremock::Request, name: &str) -> Vec<&'a str> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("a header value"))
        .collect()
}

#[tokio::test]
async fn the_upstream_learns_the_client_address_and_gets_its_own_host() {
    let up = Upstream::start().await;
    up.set("/v1/whoami", json!({}));
    let gw = Gateway::start(&proxy_config(&up, "/v1")).await;
    let resp = http().get(gw.url("/whoami")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.requests("/v1/whoami").await;
    let r = &seen[0];
    assert_eq!(header(r, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(r, "x-forwarded-proto"), ["http"]);
    let gw_host = format!("127.0.0.1:{}", gw.port);
    assert_eq!(header(r, "x-forwarded-host"), [gw_host.as_str()]);
    let up_host = up.url().trim_start_matches("http://").to_string();
    assert_eq!(header(r, "host"), [up_host.as_str()]);
}

#[tokio::test]
async fn forged_forwarding_headers_are_dropped_unless_trusted() {
    let up = Upstream::start().await;
    up.set("/whoami", json!({}));
    let forged = "GET /whoami HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 10.0.0.1\r\nForwarded: for=10.0.0.1";
    let gw = Gateway::start(&proxy_config(&up, "")).await;
    assert_eq!(raw(gw.port, forged).await.0, 200);
    let seen = up.requests("/whoami").await;
    let r = &seen[0];
    assert_eq!(header(r, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(r, "x-forwarded-proto"), ["http"]);
    assert!(header(r, "x-real-ip").is_empty() && header(r, "forwarded").is_empty());
    drop(gw);

    let trusting = Gateway::start(&proxy_config(&up, "").proxy_trust_forwarded()).await;
    assert_eq!(raw(trusting.port, forged).await.0, 200);
    let seen = up.requests("/whoami").await;
    let r = &seen[1];
    assert_eq!(header(r, "x-forwarded-for"), ["10.0.0.1, 127.0.0.1"]);
    assert_eq!(header(r, "x-forwarded-proto"), ["https"]);
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host() {
    let up = Upstream::start().await;
    up.set("/vhost", json!({}));
    let gw = Gateway::start(&proxy_config(&up, "").preserve_host()).await;
    let (status, _) = raw(gw.port, "GET /vhost HTTP/1.1\r\nHost: app.example").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&up.requests("/vhost").await[0], "host"),
        ["app.example"]
    );
}

#[tokio::test]
async fn an_absolute_form_target_cannot_pick_the_upstream_host_or_path() {
    let up = Upstream::start().await;
    up.set("/v1/x", json!({}));
    let gw = Gateway::start(&proxy_config(&up, "/v1")).await;
    let (status, text) = raw(
        gw.port,
        "GET http://admin.internal/x HTTP/1.1\r\nHost: admin.internal",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let seen = up.requests("/v1/x").await;
    let up_host = up.url().trim_start_matches("http://").to_string();
    assert_eq!(header(&seen[0], "host"), [up_host.as_str()]);
}

#[tokio::test]
async fn a_path_that_could_leave_the_base_path_gets_400() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&proxy_config(&up, "/v1")).await;
    for path in [
        "/../admin",
        "/v1/../../x",
        "/%2e%2e/admin",
        "/.%2E/admin",
        "/a/..%2f..%2fadmin",
        "/a/..;/admin",
        "/a/..%5c..%5cadmin",
    ] {
        let (status, text) = raw(gw.port, &format!("GET {path} HTTP/1.1\r\nHost: gw")).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("dot segments"), "{path}: {text}");
    }
    let (status, _) = raw(gw.port, "GET /a\\..\\admin HTTP/1.1\r\nHost: gw").await;
    assert_eq!(status, 400);
    let seen = up.server.received_requests().await.unwrap();
    let paths: Vec<&str> = seen.iter().map(|r| r.url.path()).collect();
    assert!(paths.is_empty(), "nothing reached the upstream: {paths:?}");
}

#[tokio::test]
async fn a_poll_cannot_leave_the_base_path() {
    let up = Upstream::start().await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .base("/v1")
            .stream("/sse/o/{id}", "/o/{id}")
            .params(json!({"id": ".+"})),
    )
    .await;
    for value in ["%2e%2e", ".%2E", "..%2F..%2Fadmin", "..%5C..%5Cadmin"] {
        raw_get(gw.port, &format!("/sse/o/{value}")).await;
    }
    let seen = up.server.received_requests().await.unwrap();
    let paths: Vec<&str> = seen.iter().map(|r| r.url.path()).collect();
    assert!(!paths.is_empty(), "the encoded values were polled");
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("/v1/o/") && p.matches('/').count() == 3),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_body_over_proxy_max_body_gets_413_and_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&proxy_config(&up, "").limit("proxy_max_body", "1KiB")).await;
    let resp = http()
        .post(gw.url("/upload"))
        .body(vec![b'x'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await.unwrap().contains("over 1024 bytes"));
    assert_eq!(up.count("/upload").await, 0);

    let chunks = futures_util::stream::iter(
        (0..3).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 1000]))),
    );
    let resp = http()
        .post(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(up.count("/upload").await, 0);

    let resp = http()
        .post(gw.url("/upload"))
        .body(vec![b'z'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "at the limit, the upstream answers");
    assert_eq!(up.count("/upload").await, 1);
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_after_proxy_timeout() {
    let up = Upstream::start().await;
    up.set("/slow", json!({}));
    up.delay("/slow", Duration::from_secs(60));
    let gw = Gateway::start(&proxy_config(&up, "").limit("proxy_timeout", "300ms")).await;
    let resp = http().get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
}
