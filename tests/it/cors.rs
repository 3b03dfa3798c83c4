//! Pages on listed origins may subscribe with credentials; other origins get no CORS headers.

use serde_json::json;

use crate::support::*;

const APP: &str = "https://app.example.com";

fn yaml(up: &Upstream) -> String {
    format!(
        "cors:\n  origins: [{APP}]\n  credentials: true\n{}  - path: /sse/open\n    upstream: api\n    poll: /doc\n    cors: {{ origins: [\"*\"] }}\n",
        config(up, "  - path: /sse/doc\n    upstream: api\n    poll: /doc\n")
    )
}

async fn preflight(gw: &Gateway, path: &str, origin: &str) -> reqwest::Response {
    http()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_succeeds_and_others_get_no_cors_headers() {
    let up = Upstream::json("/doc", json!({})).await;
    let gw = Gateway::start(&yaml(&up)).await;
    let ok = preflight(&gw, "/sse/doc", APP).await;
    assert_eq!(ok.status(), 204);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Last-Event-ID"));
    let other = preflight(&gw, "/sse/doc", "https://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_stream_names_the_origin_never_a_star_with_credentials() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&yaml(&up)).await;
    let resp = gw.get_sse("/sse/doc", &[("origin", APP)]).await;
    assert_eq!(resp.headers()["access-control-allow-origin"], APP);
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    let mut c = SseClient::new(resp);
    assert_eq!(c.snapshot().await, json!({"v": 1}));

    let resp = gw
        .get_sse("/sse/doc", &[("origin", "https://evil.example")])
        .await;
    assert_eq!(
        resp.status(),
        200,
        "the stream itself is served; the browser enforces CORS"
    );
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    // A stream's own `cors` wins over the global one.
    let open = gw
        .get_sse("/sse/open", &[("origin", "https://anyone.test")])
        .await;
    assert_eq!(
        open.headers()["access-control-allow-origin"],
        "https://anyone.test"
    );
    assert!(open
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}
