//! A browser resumes on any gateway, and after every gateway restarted, with exactly what it
//! missed.

use super::*;

#[tokio::test]
async fn a_client_resumes_on_another_gateway_with_exactly_what_it_missed() {
    let Some(mut c) = cluster(|cfg| cfg.replay(4)).await else {
        return;
    };
    let left = c.client(0, "a").await;
    let mut watchers = vec![c.client(1, "b").await, c.client(2, "c").await];
    for _ in 0..3 {
        let next = c.change();
        all_reach(&mut watchers, &next).await;
    }
    let mut back = left.resume_on(c.gw(1), PATH, "a->b").await;
    for k in 1..=3 {
        let seen = back.next().await.expect("a replayed event");
        assert_eq!(seen.event, "patch", "{}", back.log());
        assert_eq!(back.seq(), left.seq() + k);
    }
    assert_eq!(back.doc(), Some(&doc(c.n)));
    back.quiet(2 * INTERVAL).await;

    // Past the history (`replay: 4`): one snapshot, never a patch on the wrong base.
    for _ in 0..5 {
        let next = c.change();
        all_reach(&mut watchers, &next).await;
    }
    let mut late = left.resume_on(c.gw(2), PATH, "a->c, late").await;
    late.snapshot(&doc(c.n)).await;
    for id in ["nonsense", "000000000001-1"] {
        let headers = [("last-event-id", id)];
        let mut stranger = Recorder::connect_with(c.gw(1), PATH, &headers, id, &c.ledger).await;
        stranger.snapshot(&doc(c.n)).await;
    }
}

#[tokio::test]
async fn ids_survive_a_restart_of_every_gateway() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = c.clients().await;
    c.holder().await;
    let next = c.change();
    all_reach(&mut clients, &next).await;
    for i in 0..NODES.len() {
        c.terminate(i);
    }
    for client in &mut clients {
        client.until_closed().await;
    }
    c.wait_gone().await;

    // A change while no gateway runs: the first poll after the restart finds it, and the
    // document kept in Redis is what it is diffed against.
    let next = c.change();
    c.boot_missing().await;
    let mut back = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let on = (i + 1) % NODES.len();
        back.push(
            client
                .resume_on(c.gw(on), PATH, &format!("{}->{}", client.who, NODES[on]))
                .await,
        );
    }
    let got = all_reach(&mut back, &next).await;
    one_patch_each(&got, &back);
    for (b, before) in back.iter().zip(&clients) {
        assert_eq!(
            (b.epoch(), b.seq()),
            (before.epoch(), before.seq() + 1),
            "{}",
            b.log()
        );
    }
    let mut fresh = c.client(0, "a, new").await;
    assert_eq!(fresh.epoch(), clients[0].epoch());
    fresh.quiet(INTERVAL).await;
}
