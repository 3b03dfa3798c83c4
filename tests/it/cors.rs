//! Pages on listed origins may subscribe with credentials; other origins get no CORS headers.

use serde_json::json;

use crate::support::*;

const APP: &str = "https://app.example.com";

/// `/sse/doc` for pages on `APP`, with credentials; `/sse/open`, the same document, for any page.
fn doc(up: &Upstream) -> Cfg {
    Cfg::new(up)
        .cors(json!({"origins": [APP], "credentials": true}))
        .stream("/sse/doc", "/doc")
        .stream("/sse/open", "/doc")
        .stream_cors(json!({"origins": ["*"]}))
}

async fn preflight(gw: &Gateway, path: &str, origin: &str) -> reqwest::Response {
    http()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .send()
        .await
        .expect("preflight request")
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_succeeds_and_others_get_no_cors_headers() {
    let up = Upstream::json("/doc", json!({})).await;
    let gw = Gateway::start(&doc(&up)).await;
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
    let gw = Gateway::start(&doc(&up)).await;
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

    // A stream's own `cors` wins over the global one; `*` is answered with `*`, not the origin.
    let open = gw
        .get_sse("/sse/open", &[("origin", "https://anyone.test")])
        .await;
    assert_eq!(open.headers()["access-control-allow-origin"], "*");
    assert!(open
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

#[test]
fn a_star_with_credentials_is_refused_at_load() {
    let Checked {
        code,
        stderr: err,
        path,
        ..
    } = check(
        "upstreams:\n  api:\n    url: http://127.0.0.1:1\ncors:\n  origins: [\"*\"]\n  credentials: true\nproxy: api\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "{}:5:3: cors.origins[0]: `*` with `credentials: true`",
            path.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn the_null_origin_gets_no_credentials_and_a_star_no_reflection() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&doc(&up)).await;
    let resp = gw.get_sse("/sse/doc", &[("origin", "null")]).await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert!(resp
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    let open = gw.get_sse("/sse/open", &[("origin", "null")]).await;
    assert_eq!(open.headers()["access-control-allow-origin"], "*");
    assert!(open
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

#[tokio::test]
async fn every_cors_answer_varies_by_origin() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&doc(&up)).await;
    let vary = |r: &reqwest::Response| {
        r.headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin"))
    };
    for origin in [APP, "https://evil.example"] {
        let r = gw.get_sse("/sse/doc", &[("origin", origin)]).await;
        assert!(vary(&r), "stream, {origin}: {:?}", r.headers());
        let r = preflight(&gw, "/sse/doc", origin).await;
        assert_eq!(r.status(), 204);
        assert!(vary(&r), "preflight, {origin}: {:?}", r.headers());
    }
    let r = gw.get_sse("/sse/doc", &[]).await;
    assert!(vary(&r), "no Origin: {:?}", r.headers());
}
