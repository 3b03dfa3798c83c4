//! A client gets the document on connect and every change after it, in the format it wants.

use serde_json::json;

use crate::support::*;

/// `/sse/doc`, polling `up`'s `/doc` every 100 ms.
fn doc(up: &Upstream) -> Cfg {
    Cfg::new(up).stream("/sse/doc", "/doc").interval("100ms")
}

#[tokio::test]
async fn a_client_gets_a_snapshot_on_connect() {
    let up = Upstream::json("/doc", json!({"eur": 1.08})).await;
    let gw = Gateway::start(&doc(&up)).await;
    let resp = gw.get_sse("/sse/doc", &[]).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["transfer-encoding"], "chunked");
    let mut client = SseClient::new(resp);
    let ev = client.next_event().await;
    assert_eq!(ev.event, "snapshot");
    assert_eq!(ev.retry, Some(std::time::Duration::from_secs(3)));
    assert!(!ev.id.is_empty());
    assert_eq!(client.doc, Some(json!({"eur": 1.08})));
}

#[tokio::test]
async fn an_upstream_change_reaches_each_client_as_a_patch_that_rebuilds_the_document() {
    let up = Upstream::json(
        "/doc",
        json!({"a": {"b": [1, 2, 3], "c": "x"}, "list": ["p", "q"], "s": "plain"}),
    )
    .await;
    let gw = Gateway::start(&doc(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    let versions = [
        json!({"a": {"b": [1, 2, 3, 4, 5], "c": "x", "d": {"deep": true}}, "list": ["p", "q"], "s": "plain"}),
        json!({"a": {"b": [5, 4], "c": null}, "list": ["q", "p", "r"], "s": "line1\nline2\r\ndata: injected"}),
        json!({"a": {}, "list": [], "s": "ünïcødé ✓ 漢字 🎉", "n": 1.5e300}),
        json!([{"top": "level array"}, 2, "three"]),
        json!({"back": "to an object", "empty": ""}),
    ];
    for v in versions {
        up.set("/doc", v.clone());
        assert_eq!(client.next_document().await, v);
    }
}

#[tokio::test]
async fn events_are_patches_whose_ids_increase() {
    let up = Upstream::json("/doc", padded(json!({"n": 0}))).await;
    let gw = Gateway::start(&doc(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    let first = client.next_event().await;
    let mut last = id_parts(&first.id).expect("an id").1;
    for n in 1..4 {
        up.set("/doc", padded(json!({"n": n})));
        let ev = client.next_of("patch").await;
        assert!(!ev.id.contains(['\r', '\n', '\0']));
        let seq = id_parts(&ev.id).expect("an id").1;
        assert_eq!(seq, last + 1);
        last = seq;
        assert_eq!(client.doc, Some(padded(json!({"n": n}))));
    }
}

#[tokio::test]
async fn merge_patch_mode_sends_rfc7396_patches() {
    let up = Upstream::json("/doc", padded(json!({"a": 1, "b": {"c": 2, "d": 3}}))).await;
    let gw = Gateway::start(&doc(&up).diff("merge-patch")).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    up.set("/doc", padded(json!({"a": 1, "b": {"c": 5}})));
    let ev = client.next_of("merge-patch").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ev.data).unwrap(),
        json!({"b": {"c": 5, "d": null}})
    );
    assert_eq!(client.doc, Some(padded(json!({"a": 1, "b": {"c": 5}}))));
    // RFC 7396 cannot set a null: that change comes as a snapshot.
    up.set("/doc", json!({"a": null, "b": {"c": 5}}));
    let ev = client.next_event().await;
    assert_eq!(ev.event, "snapshot");
    assert_eq!(client.doc, Some(json!({"a": null, "b": {"c": 5}})));
}

#[tokio::test]
async fn snapshot_mode_sends_the_whole_document_each_time() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&doc(&up).diff("snapshot")).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    up.set("/doc", json!({"v": 2}));
    let ev = client.next_event().await;
    assert_eq!(ev.event, "snapshot");
    assert_eq!(client.doc, Some(json!({"v": 2})));
}

#[tokio::test]
async fn each_client_may_pick_its_own_format() {
    let up = Upstream::json("/doc", padded(json!({"v": 1, "keep": true}))).await;
    let gw = Gateway::start(&doc(&up)).await;
    let mut patch = gw.sse("/sse/doc").await;
    let mut merge = gw.sse("/sse/doc?format=merge-patch").await;
    let mut snap = gw.sse("/sse/doc?format=snapshot").await;
    for c in [&mut patch, &mut merge, &mut snap] {
        c.snapshot().await;
    }
    let v2 = padded(json!({"v": 2, "keep": true}));
    up.set("/doc", v2.clone());
    assert_eq!(patch.next_event().await.event, "patch");
    assert_eq!(merge.next_event().await.event, "merge-patch");
    assert_eq!(snap.next_event().await.event, "snapshot");
    for c in [&patch, &merge, &snap] {
        assert_eq!(c.doc.as_ref(), Some(&v2));
    }
}

#[tokio::test]
async fn an_unknown_format_is_a_400_with_a_reason() {
    let up = Upstream::json("/doc", json!({})).await;
    let gw = Gateway::start(&doc(&up)).await;
    let resp = gw.get_sse("/sse/doc?format=xml", &[]).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("unknown format `xml`"));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_sent_as_snapshots_over_several_data_lines() {
    let up = Upstream::start().await;
    up.set_text("/doc", "line one\nline two");
    let gw = Gateway::start(&doc(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    let ev = client.next_event().await;
    assert_eq!(
        (ev.event.as_str(), ev.data.as_str()),
        ("snapshot", "line one\nline two")
    );
    up.set_text("/doc", "changed");
    let ev = client.next_event().await;
    assert_eq!(
        (ev.event.as_str(), ev.data.as_str()),
        ("snapshot", "changed")
    );
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_alive() {
    let up = Upstream::json("/doc", json!({})).await;
    let gw = Gateway::start(&doc(&up).heartbeat("200ms")).await;
    let mut resp = gw.get_sse("/sse/doc", &[]).await;
    let mut text = String::new();
    while text.matches(":\n\n").count() < 2 {
        let chunk = tokio::time::timeout(DEADLINE, resp.chunk()).await;
        let chunk = chunk
            .expect("a heartbeat in time")
            .unwrap()
            .expect("the stream is open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_change_whose_patch_would_outgrow_the_document_comes_as_a_snapshot_and_holds_up_nothing()
{
    // Every op of a naive RFC 6902 diff would repeat the 100 KB key: 5 GB for 50,000 changes.
    let key = "k".repeat(100_000);
    let up = Upstream::json("/big", json!({ key.clone(): vec![0; 50_000] })).await;
    up.set("/small", padded(json!({"v": 1})));
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/big", "/big")
            .interval("100ms")
            .stream("/sse/small", "/small")
            .interval("100ms"),
    )
    .await;
    let mut big = gw.sse("/sse/big").await;
    big.snapshot().await;
    let mut small = gw.sse("/sse/small").await;
    small.snapshot().await;

    let new = json!({ key: vec![1; 50_000] });
    up.set("/big", new.clone());
    up.set("/small", padded(json!({"v": 2})));
    assert_eq!(small.next_of("patch").await.event, "patch");
    assert_eq!(small.doc, Some(padded(json!({"v": 2}))));
    assert_eq!(big.next_event().await.event, "snapshot");
    assert_eq!(big.doc, Some(new));
}

#[tokio::test]
async fn a_ten_megabyte_change_on_one_stream_holds_up_no_other_streams_events() {
    // About 10 MB of JSON: parsing and diffing it takes the gateway a second or more here.
    let big_doc = |v: u64| {
        let rows: Vec<_> = (0..250_000)
            .map(|i| json!({ "id": i, "name": format!("row number {i}") }))
            .collect();
        json!({ "v": v, "rows": rows })
    };
    let up = Upstream::json("/big", big_doc(1)).await;
    up.with_etag("/big");
    up.set("/small", padded(json!({"v": 1})));
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/big", "/big")
            .interval("200ms")
            .timeout("20s")
            .max_body("32MiB")
            .stream("/sse/small", "/small")
            .interval("100ms")
            .heartbeat("100ms"),
    )
    .await;
    let mut big = gw.sse("/sse/big").await;
    // The first poll takes the same seconds as the change below (parse, checksum, encode).
    let first = big.event_within(std::time::Duration::from_secs(120)).await;
    assert_eq!(first.map(|ev| ev.event).as_deref(), Some("snapshot"));
    assert_eq!(big.doc.as_ref().map(|d| d["v"].clone()), Some(json!(1)));
    let mut small = gw.sse("/sse/small").await;
    small.snapshot().await;

    up.set("/big", big_doc(2));
    // The small stream changes every 50 ms while the gateway takes in the big change. Were the
    // big document parsed and diffed where the pollers run, the small stream could not poll
    // (nor send a heartbeat) until it was done: its changes would stop for a second or more.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    let (mut v, mut small_patches) = (1, 0);
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                assert!(started.elapsed() < std::time::Duration::from_secs(120), "the big change never came");
                v += 1;
                up.set("/small", padded(json!({ "v": v })));
            }
            ev = small.next_event() => small_patches += usize::from(ev.event == "patch"),
            // A debug build takes seconds over 10 MB (parse, diff, checksum), longer than the
            // usual deadline on a loaded machine: the small stream is what is timed here.
            ev = big.within(std::time::Duration::from_secs(120)) => {
                assert!(matches!(ev, Some(Some(_))), "the big change never came");
                if big.doc.as_ref().is_some_and(|d| d["v"] == 2) {
                    let doc = big.doc.as_ref().expect("a document");
                    assert_eq!(doc["rows"].as_array().map(Vec::len), Some(250_000));
                    break;
                }
            },
        }
    }
    assert!(
        small_patches >= 5,
        "only {small_patches} changes of the small stream while the big one was taken in"
    );
}
