//! A client that reconnects with Last-Event-ID gets exactly what it missed, or a fresh snapshot.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// `/sse/doc`, polling `up`'s `/doc` every 50 ms and idle for a minute before it stops.
fn doc(up: &Upstream) -> Cfg {
    Cfg::new(up)
        .stream("/sse/doc", "/doc")
        .interval("50ms")
        .idle("1m")
}

async fn missed_events(
    gw: &Gateway,
    up: &Upstream,
    resume: impl Fn(&str) -> (String, Vec<(String, String)>),
) {
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    let old_doc = client.doc.clone().expect("a document");
    let last_id = client.last_id.clone();
    drop(client);

    // Two changes while away; a watcher proves they happened.
    let mut watcher = gw.sse("/sse/doc").await;
    watcher.snapshot().await;
    up.set("/doc", padded(json!({"n": 1})));
    watcher.next_document().await;
    up.set("/doc", padded(json!({"n": 2, "extra": [1]})));
    watcher.next_document().await;

    let (path, headers) = resume(&last_id);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut back = gw.sse_with(&path, &headers).await;
    back.doc = Some(old_doc);
    let a = back.next_event().await;
    let b = back.next_event().await;
    assert_eq!((a.event.as_str(), b.event.as_str()), ("patch", "patch"));
    assert_eq!(back.doc, Some(padded(json!({"n": 2, "extra": [1]}))));
    assert_eq!(b.id, watcher.last_id);
    assert!(back
        .event_within(Duration::from_millis(200))
        .await
        .is_none());
}

#[tokio::test]
async fn a_client_resuming_with_last_event_id_gets_exactly_the_events_it_missed() {
    let up = Upstream::json("/doc", padded(json!({"n": 0}))).await;
    let gw = Gateway::start(&doc(&up)).await;
    missed_events(&gw, &up, |id| {
        (
            "/sse/doc".into(),
            vec![("last-event-id".into(), id.to_string())],
        )
    })
    .await;
}

#[tokio::test]
async fn the_last_event_id_query_parameter_resumes_too() {
    let up = Upstream::json("/doc", padded(json!({"n": 0}))).await;
    let gw = Gateway::start(&doc(&up)).await;
    missed_events(&gw, &up, |id| {
        (format!("/sse/doc?lastEventId={id}"), vec![])
    })
    .await;
}

#[tokio::test]
async fn an_unknown_or_foreign_id_gets_a_fresh_snapshot() {
    let up = Upstream::json("/doc", json!({"n": 7})).await;
    let gw = Gateway::start(&doc(&up)).await;
    for id in ["nonsense", "000000000001-1", "ffffffffffff-999999"] {
        let mut client = gw.sse_with("/sse/doc", &[("last-event-id", id)]).await;
        assert_eq!(client.snapshot().await, json!({"n": 7}), "id {id}");
    }
}

/// The id's checksum says which document the client holds: at the right place but with another
/// document (a copy gone wrong), or in the form from before checksums, it gets a snapshot,
/// never patches for a base it does not have.
#[tokio::test]
async fn an_id_whose_checksum_is_not_this_documents_gets_a_fresh_snapshot() {
    let up = Upstream::json("/doc", padded(json!({"n": 0}))).await;
    let gw = Gateway::start(&doc(&up)).await;
    let mut first = gw.sse("/sse/doc").await;
    first.snapshot().await;
    let id = first.last_id.clone();
    let (epoch, seq, sum) = id_parts(&id).expect("an id");
    assert_eq!(sum, checksum(&padded(json!({"n": 0}))));
    up.set("/doc", padded(json!({"n": 1})));
    first.next_document().await;
    let wrong = format!("{epoch}-{seq}-{}", checksum(&json!({"n": 0})));
    for id in [wrong, format!("{epoch}-{seq}")] {
        let mut client = gw.sse_with("/sse/doc", &[("last-event-id", &id)]).await;
        assert_eq!(client.snapshot().await, padded(json!({"n": 1})), "id {id}");
    }
    // The right checksum resumes: one patch, to the document the watcher shows.
    let right = format!("{epoch}-{seq}-{sum}");
    let mut back = gw.sse_with("/sse/doc", &[("last-event-id", &right)]).await;
    back.doc = Some(padded(json!({"n": 0})));
    assert_eq!(back.next_event().await.event, "patch");
    assert_eq!(back.doc, first.doc);
}
