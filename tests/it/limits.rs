//! Past a limit, a browser is told to come back later rather than failing for good.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

#[tokio::test]
async fn past_the_client_limit_an_sse_client_gets_200_retry_and_overloaded() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/doc", "/doc")
            .limit("max_clients", 1),
    )
    .await;
    let mut first = gw.sse("/sse/doc").await;
    first.snapshot().await;
    let mut second = gw.sse("/sse/doc").await;
    let ev = second.next_event().await;
    assert_eq!(ev.event, "overloaded");
    let retry = ev.retry.expect("a retry field");
    assert!(retry.as_millis() >= 1000, "{retry:?}");
    assert!(second.try_next_event().await.is_none(), "the stream ends");
    assert!(
        gw.stderr().contains("client turned away"),
        "{}",
        gw.stderr()
    );
    // The first client is untouched, and its slot frees on leave.
    drop(first);
    let mut third = eventually("a free slot", || async {
        let mut c = gw.sse("/sse/doc").await;
        let ev = c.next_event().await;
        (ev.event == "snapshot").then_some(c)
    })
    .await;
    up.set("/doc", json!({"v": 2}));
    assert_eq!(third.next_document().await, json!({"v": 2}));
}

#[tokio::test]
async fn past_max_instances_others_get_503_with_retry_after() {
    let up = Upstream::json("/orders/1", json!({"id": 1})).await;
    up.set("/orders/2", json!({"id": 2}));
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/orders/{id}", "/orders/{id}")
            .max_instances(1),
    )
    .await;
    let mut one = gw.sse("/sse/orders/1").await;
    one.snapshot().await;
    // An SSE client is told to come back.
    let mut two = gw.sse("/sse/orders/2").await;
    assert_eq!(two.next_event().await.event, "overloaded");
    // Anything else gets 503 and Retry-After.
    let resp = http()
        .get(gw.url("/sse/orders/2"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    // Clients of the running instance are still welcome.
    let mut again = gw.sse("/sse/orders/1").await;
    assert_eq!(again.snapshot().await, json!({"id": 1}));
}

#[tokio::test]
async fn the_open_file_limit_is_raised_and_a_client_limit_past_it_is_warned_about() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    // No machine here allows a billion open files.
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/doc", "/doc")
            .limit("max_clients", 1_000_000_000),
    )
    .await;
    eventually("both start-up lines", || async {
        let log = gw.stderr();
        (log.contains("open-file limit") && log.contains("below limits.max_clients")).then_some(())
    })
    .await;
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(client.snapshot().await, json!({"v": 1}));
}

/// `/sse/doc`, polling `up`'s `/doc` every 100 ms, with `limits.{limit}: {value}`; every other
/// request is proxied to `up`.
fn limited(up: &Upstream, limit: &str, value: u64) -> Cfg {
    Cfg::new(up)
        .stream("/sse/doc", "/doc")
        .interval("100ms")
        .proxy()
        .limit(limit, value)
}

/// Whether the gateway closes `s` without an answer to a subscription request.
async fn closed_unanswered(mut s: TcpStream) -> bool {
    // The gateway may close before this write lands: a reset is as good as a close.
    let _ = s
        .write_all(b"GET /sse/doc HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(DEADLINE, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Reads `s` until the subscription's snapshot arrives; the response head, whatever the version.
async fn subscribe_raw(s: &mut TcpStream, request: &[u8]) -> String {
    s.write_all(request).await.expect("write");
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            if text.contains("event: snapshot") {
                return text;
            }
        }
    })
    .await
    .expect("a snapshot")
}

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect")
}

#[tokio::test]
async fn past_max_connections_a_new_connection_is_closed_and_idle_ones_count() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&limited(&up, "max_connections", 2)).await;
    let idle = connect(&gw).await;
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(client.snapshot().await, json!({"v": 1}));
    eventually("both connections counted", || async {
        (gw.metric("sse_gateway_connections").await == Some(2.0)).then_some(())
    })
    .await;

    assert!(closed_unanswered(connect(&gw).await).await);
    assert_eq!(
        gw.metric("sse_gateway_connections_refused_total{limit=\"max_connections\"}")
            .await,
        Some(1.0)
    );
    assert!(
        gw.stderr().contains("connection refused"),
        "{}",
        gw.stderr()
    );

    // The clients it has are untouched, and a closed connection makes room.
    up.set("/doc", json!({"v": 2}));
    assert_eq!(client.next_document().await, json!({"v": 2}));
    drop(idle);
    let mut next = eventually("a free connection", || async {
        let mut s = connect(&gw).await;
        let _ = s
            .write_all(b"GET /sse/doc HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n")
            .await;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.is_ok().then_some((s, buf))
    })
    .await;
    assert_eq!(&next.1, b"HTTP/1.1 200");
    let mut buf = [0u8; 1];
    assert!(matches!(next.0.read(&mut buf).await, Ok(1)));
}

#[tokio::test]
async fn a_kept_alive_connection_counts_once_for_every_request_on_it() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.set("/api/info", json!({"name": "legacy"}));
    let gw = Gateway::start(&limited(&up, "max_connections", 1)).await;
    let mut s = connect(&gw).await;
    s.write_all(b"GET /api/info HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("legacy") {
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after the proxied request");
        seen.extend_from_slice(&buf[..n]);
    }
    // The second request on the connection, served through pingora's session.
    let head = subscribe_raw(
        &mut s,
        b"GET /sse/doc HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(closed_unanswered(connect(&gw).await).await);
}

#[tokio::test]
async fn past_max_clients_per_ip_that_address_is_closed_and_others_are_served() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&limited(&up, "max_clients_per_ip", 1)).await;
    let mut first = gw.sse("/sse/doc").await;
    assert_eq!(first.snapshot().await, json!({"v": 1}));

    assert!(closed_unanswered(connect(&gw).await).await);
    assert_eq!(
        gw.metric("sse_gateway_connections_refused_total{limit=\"max_clients_per_ip\"}")
            .await,
        Some(1.0)
    );

    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket
        .connect(([127, 0, 0, 1], gw.port).into())
        .await
        .unwrap();
    let head = subscribe_raw(
        &mut other,
        b"GET /sse/doc HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The address's count falls with its last connection.
    drop(first);
    let mut again = eventually("127.0.0.1 served again", || async {
        let resp = http()
            .get(gw.url("/sse/doc"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then(|| SseClient::new(resp))
    })
    .await;
    assert_eq!(again.snapshot().await, json!({"v": 1}));
}

#[tokio::test]
async fn a_subscription_through_pingoras_session_takes_the_slots_it_costs() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    // An HTTP/1.0 client is served by pingora's session: 18 slots of the direct path's 2.6 KB.
    let gw = Gateway::start(&limited(&up, "max_clients", 18)).await;
    let mut heavy = connect(&gw).await;
    subscribe_raw(
        &mut heavy,
        b"GET /sse/doc HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    assert_eq!(gw.metric("sse_gateway_client_slots").await, Some(18.0));
    assert_eq!(
        gw.metric("sse_gateway_clients_pingora_session").await,
        Some(1.0)
    );

    let mut light = gw.sse("/sse/doc").await;
    assert_eq!(light.next_event().await.event, "overloaded");

    drop(heavy);
    let mut served = eventually("the slots given back", || async {
        let mut c = gw.sse("/sse/doc").await;
        (c.next_event().await.event == "snapshot").then_some(c)
    })
    .await;
    assert_eq!(gw.metric("sse_gateway_client_slots").await, Some(1.0));
    up.set("/doc", json!({"v": 2}));
    assert_eq!(served.next_document().await, json!({"v": 2}));
}

/// Files in use by `pid` now.
fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the gateway's fds")
        .count() as u64
}

#[tokio::test]
async fn out_of_files_the_gateway_keeps_its_clients_and_accepts_again_once_files_free() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    // A configured limit past the open-file limit: nothing but the kernel stops new connections.
    let gw = Gateway::start(&limited(&up, "max_connections", 100000)).await;
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(client.snapshot().await, json!({"v": 1}));

    // Soft and hard: the gateway would raise a soft limit again.
    let pid = gw.pid();
    let limit = open_files(pid) + 2;
    rlimit::prlimit(
        pid as i32,
        rlimit::Resource::NOFILE,
        Some((limit, limit)),
        None,
    )
    .unwrap();
    let held = std::sync::Mutex::new(Vec::new());
    let start = std::time::Instant::now();
    eventually("accept fails for want of files", || async {
        let s = connect(&gw).await;
        held.lock().unwrap().push(s);
        gw.stderr().contains("Too many open files").then_some(())
    })
    .await;

    // The attached client still gets changes: the poll reuses its pooled connection.
    up.set("/doc", json!({"v": 2}));
    assert_eq!(client.next_document().await, json!({"v": 2}));
    let failures = gw.stderr().matches("Accept() failed").count() as u64;
    assert!(
        failures <= start.elapsed().as_secs() + 1,
        "{failures} accept failures logged in {:?}",
        start.elapsed()
    );

    drop(held);
    let mut next = gw.sse("/sse/doc").await;
    assert_eq!(next.snapshot().await, json!({"v": 2}));
}

#[tokio::test]
async fn at_max_instances_an_idle_instance_makes_room_for_a_new_one() {
    let up = Upstream::start().await;
    for id in 1..=3 {
        up.set(&format!("/orders/{id}"), json!({ "id": id }));
    }
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/orders/{id}", "/orders/{id}")
            .interval("100ms")
            .max_instances(2),
    )
    .await;
    // Two one-shot subscriptions that leave at once, one after the other.
    for id in 1..=2 {
        let mut c = gw.sse(&format!("/sse/orders/{id}")).await;
        assert_eq!(c.snapshot().await, json!({ "id": id }));
        drop(c);
        let instance = format!("/orders/{id}");
        eventually("the client is counted out", || async {
            let list: serde_json::Value = http()
                .get(gw.admin_url("/streams"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let left = list["instances"]
                .as_array()?
                .iter()
                .any(|i| i["instance"] == instance.as_str() && i["clients"] == 0);
            left.then_some(())
        })
        .await;
    }
    // Both wait out their idle period; the one idle longest makes room.
    let mut third = gw.sse("/sse/orders/3").await;
    assert_eq!(third.snapshot().await, json!({"id": 3}));
    let seen = up.count("/orders/1").await;
    let kept = up.count("/orders/2").await;
    eventually("the instance still there polls on", || async {
        (up.count("/orders/2").await >= kept + 5).then_some(())
    })
    .await;
    // One poll may have been under way when it was evicted.
    let evicted = up.count("/orders/1").await;
    assert!(evicted <= seen + 1, "{seen} then {evicted}");
    let kept = up.count("/orders/2").await;
    eventually("the instance still there polls on", || async {
        (up.count("/orders/2").await >= kept + 5).then_some(())
    })
    .await;
    assert_eq!(
        up.count("/orders/1").await,
        evicted,
        "the evicted one stopped"
    );
    assert!(
        gw.stderr().contains("idle instance evicted"),
        "{}",
        gw.stderr()
    );
}
