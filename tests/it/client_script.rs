//! The gateway serves its browser client (`clients/js/live-document.js`) at
//! `/_gateway/client.js`, cached and revalidated, to pages on any origin; `client_script` moves
//! it or turns it off, and a path a stream claims is refused at load.

use serde_json::json;

use crate::support::*;

const SCRIPT: &str = include_str!("../../clients/js/live-document.js");

fn header(resp: &reqwest::Response, name: &str) -> String {
    let value = resp.headers().get(name);
    value.expect(name).to_str().expect(name).to_string()
}

#[tokio::test]
async fn the_client_script_is_served_cached_revalidated_and_to_any_origin() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&Cfg::new(&up).stream("/sse/doc", "/doc")).await;

    let resp = http()
        .get(gw.url("/_gateway/client.js"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&resp, "cache-control"), "public, max-age=300");
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    let etag = header(&resp, "etag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(resp.text().await.unwrap(), SCRIPT);

    for held in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
    ] {
        let again = http()
            .get(gw.url("/_gateway/client.js"))
            .header("If-None-Match", &held)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{held}");
        assert_eq!(header(&again, "etag"), etag);
        assert!(again.headers().get("content-length").is_none());
        assert_eq!(again.text().await.unwrap(), "");
    }
    let stale = http()
        .get(gw.url("/_gateway/client.js"))
        .header("If-None-Match", "\"an-older-build\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.text().await.unwrap(), SCRIPT);
}

#[tokio::test]
async fn client_script_false_leaves_the_path_to_the_proxy() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.set_raw("/_gateway/client.js", "the upstream's own", "text/plain");
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/doc", "/doc")
            .proxy()
            .client_script(false),
    )
    .await;
    let resp = http().get(gw.url("/_gateway/client.js")).send().await;
    assert_eq!(resp.unwrap().text().await.unwrap(), "the upstream's own");
}

#[tokio::test]
async fn client_script_at_another_path_serves_it_there_and_the_demo_page_follows() {
    let up = Upstream::json("/prices", json!({"v": 1})).await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/prices", "/prices")
            .client_script("/static/live-document.js")
            .demo(free_port()),
    )
    .await;
    let moved = http().get(gw.url("/static/live-document.js")).send().await;
    assert_eq!(moved.unwrap().text().await.unwrap(), SCRIPT);
    let old = http().get(gw.url("/_gateway/client.js")).send().await;
    assert_eq!(old.unwrap().status(), 404, "no proxy: nothing there");
    let page = http().get(gw.url("/")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"from "/static/live-document.js""#),
        "{html}"
    );
}

#[test]
fn a_client_script_path_that_a_stream_claims_is_refused_at_load() {
    let yaml = "upstreams:
  api:
    url: http://127.0.0.1:3000
streams:
  - path: /sse/{room}
    upstream: api
    poll: /rooms/{room}
client_script: /sse/client.js
";
    let out = check(yaml);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let at = format!("{}:8:", out.path.display());
    assert!(
        out.stderr.contains(&at)
            && out.stderr.contains(": client_script: ")
            && out.stderr.contains("is also the stream `/sse/{room}`"),
        "{}",
        out.stderr
    );
}
