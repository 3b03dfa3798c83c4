//! `rediss://`: the cluster's Redis behind TLS, trusted through the usual `SSL_CERT_FILE`.

use super::*;

#[tokio::test]
async fn a_redis_behind_tls_is_reached_with_rediss() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(redis) = Redis::start_tls().await else {
        return;
    };
    let up = Upstream::json(DOC, doc(0)).await;
    let cfg = Cfg::new(&up)
        .stream(PATH, DOC)
        .interval("300ms")
        .threads(1)
        .in_cluster(&redis.url(), "t-tls", "a");
    let trust = redis
        .certificate()
        .expect("a TLS server")
        .display()
        .to_string();
    let gw = Gateway::start_with_env(&cfg, &[("SSL_CERT_FILE", &trust)]).await;
    let mut client = gw.sse(PATH).await;
    let first = client.next_event().await;
    assert_eq!(first.event, "snapshot");
    let ready = http().get(gw.admin_url("/readyz")).send().await.unwrap();
    let ready = ready.text().await.unwrap();
    assert!(ready.contains("cluster: connected as a"), "{ready}");
    // The change went through Redis: it is the holder's, numbered after the first.
    up.set(DOC, doc(1));
    let next = client.next_event().await;
    assert_eq!(next.event, "patch");
    let (epoch, seq, _) = id_parts(&first.id).expect("an id");
    let (next_epoch, next_seq, _) = id_parts(&next.id).expect("an id");
    assert_eq!((next_epoch, next_seq), (epoch, seq + 1));
    let streams: Value = http()
        .get(gw.admin_url("/streams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        streams["instances"][0]["cluster"]["role"], "holder",
        "{streams}"
    );
}
