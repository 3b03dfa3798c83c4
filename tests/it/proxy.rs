//! Everything that is not a stream subscription goes to the API unchanged.

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
    let gw = Gateway::start(&format!(
        "{}proxy: api\n",
        config(
            &up,
            "  - path: /sse/doc\n    upstream: api\n    poll: /doc\n"
        )
    ))
    .await;
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
    let gw = Gateway::start(&format!(
        "{}proxy: api\n",
        config(
            &up,
            "  - path: /api/prices\n    upstream: api\n    interval: 100ms\n"
        )
    ))
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
    let gw = Gateway::start(&config(
        &up,
        "  - path: /sse/doc\n    upstream: api\n    poll: /doc\n",
    ))
    .await;
    let resp = http().get(gw.url("/elsewhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("no stream at /elsewhere"));
}

#[tokio::test]
async fn a_poll_cannot_leave_the_base_path() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  api:\n    url: {}/v1\nstreams:\n  - path: /sse/o/{{id}}\n    upstream: api\n    poll: /o/{{id}}\n    params: {{ id: \".+\" }}\n",
        up.url()
    ))
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
