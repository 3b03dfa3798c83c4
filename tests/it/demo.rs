//! The repo's gateway.yaml runs with nothing else: a demo API, a stream of it, and a live page.

use crate::support::*;

#[tokio::test]
async fn the_repos_config_serves_the_demo_page_and_a_live_ticker() {
    let yaml =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml")).unwrap();
    let demo_port = free_port();
    // Its fixed admin port may be taken by another gateway on this machine.
    let admin_port = free_port();
    let yaml: String = yaml
        .lines()
        .filter(|l| !l.starts_with("listen:"))
        .map(|l| {
            l.replace("127.0.0.1:3000", &format!("127.0.0.1:{demo_port}"))
                .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin_port}"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let gw = Gateway::start(&Yaml(yaml)).await;

    let page = http().get(gw.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"import { LiveDocument } from "/_gateway/client.js""#),
        "{html}"
    );
    let script = http().get(gw.url("/_gateway/client.js")).send().await;
    assert_eq!(script.unwrap().status(), 200);

    let mut client = gw.sse("/sse/prices").await;
    let doc = client.snapshot().await;
    assert_eq!(doc["quotes"].as_object().unwrap().len(), 5, "{doc}");
    assert!(doc.get("generated_at").is_none(), "ignored: {doc}");
    // A tick changes a few prices of a document that is mostly names: a patch.
    let patch = client.next_of("patch").await;
    assert!(patch.data.starts_with("[{\"op\""), "{}", patch.data);
    assert_ne!(client.doc.clone().unwrap(), doc);

    // Every other request reaches the demo API through the proxy.
    let api = http().get(gw.url("/api/prices")).send().await.unwrap();
    assert_eq!(api.status(), 200);
    let body: serde_json::Value = api.json().await.unwrap();
    assert!(body["generated_at"].is_u64());
}
