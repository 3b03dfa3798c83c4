//! `client_script`: on by default, off, or moved, and never on a path a stream claims.

use super::{parse, Config, ConfigErrors};
use std::net::SocketAddr;

fn load(extra: &str) -> Result<Config, ConfigErrors> {
    let text = format!(
        "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /sse/{{room}}\n    upstream: api\n    poll: /rooms/{{room}}\n  - path: /js/app.js\n    upstream: api\n{extra}"
    );
    let resolve = |_: &str, port| Some(SocketAddr::from(([127, 0, 0, 1], port)));
    parse("g.yaml", &text, &|_| None, &resolve)
}

#[test]
fn the_client_script_is_on_at_its_default_path_unless_turned_off() {
    let on = load("").unwrap().client_script;
    assert_eq!(on.as_deref(), Some("/_gateway/client.js"));
    let set = load("client_script: true\n").unwrap().client_script;
    assert_eq!(set.as_deref(), Some("/_gateway/client.js"));
    assert_eq!(load("client_script: false\n").unwrap().client_script, None);
    let moved = load("client_script: /static/live.js\n")
        .unwrap()
        .client_script;
    assert_eq!(moved.as_deref(), Some("/static/live.js"));
    let err = load("client_script: false\ndemo:\n  page: true\n")
        .err()
        .unwrap();
    assert!(err.to_string().contains("demo.page"), "{err}");
    assert!(load("client_script: false\ndemo:\n  page: false\n").is_ok());
}

#[test]
fn a_client_script_path_a_stream_claims_is_refused_at_its_line() {
    for (path, stream) in [("/sse/lobby", "/sse/{room}"), ("/js/app.js", "/js/app.js")] {
        let err = load(&format!("client_script: {path}\n"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("g.yaml:10:")
                && err.contains("client_script")
                && err.contains(&format!("is also the stream `{stream}`")),
            "{err}"
        );
    }
}

#[test]
fn a_client_script_that_is_not_a_plain_path_is_refused() {
    for bad in [
        "client.js",
        "//cdn.example/x.js",
        "/x.js?v=1",
        "/",
        "\"/a b.js\"",
        "\"/</script>\"",
        "42",
    ] {
        let err = load(&format!("client_script: {bad}\n"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("client_script"), "{bad}: {err}");
    }
}
