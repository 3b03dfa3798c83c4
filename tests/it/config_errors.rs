//! A broken gateway.yaml is refused with the file, line and key, and `check` says what is wrong.

use crate::support::{check, check_with_env, Checked};

const GOOD: &str = "upstreams:
  legacy:
    url: http://127.0.0.1:3000
streams:
  - path: /sse/prices
    upstream: legacy
    poll: /api/prices
";

/// Runs `check` on `yaml` and asserts it fails naming `line` and `key`.
fn refused(yaml: &str, line: usize, key: &str, words: &str) {
    let Checked {
        code,
        stderr: err,
        path,
        dir: _dir,
        ..
    } = check(yaml);
    assert_eq!(code, 2, "{err}");
    // Line 0: the key is in no line of the file, so none is printed.
    let at = match line {
        0 => format!("{}: {key}: ", path.display()),
        _ => format!("{}:{line}:", path.display()),
    };
    assert!(err.contains(&at), "expected {at} in:\n{err}");
    assert!(
        err.contains(&format!(": {key}: ")),
        "expected key {key} in:\n{err}"
    );
    assert!(err.contains(words), "expected `{words}` in:\n{err}");
}

#[test]
fn the_issue_example_loads_as_written() {
    let yaml = r#"listen: 0.0.0.0:8080
upstreams:
  legacy:
    url: http://127.0.0.1:3000
    headers: { X-Api-Key: "${LEGACY_TOKEN}" }   # ${VAR} from the environment
defaults:            # any stream key may be set here and overridden per stream
  interval: 2s
  timeout: 5s
  diff: json-patch   # json-patch | merge-patch | snapshot
  heartbeat: 15s
  replay: 256        # events kept per stream instance for resume
  idle: 30s          # keep polling this long after the last client leaves
streams:
  - path: /sse/prices               # what clients subscribe to
    upstream: legacy
    poll: /api/prices               # path polled on the upstream (default: same as path)
    interval: 1s
    ignore: [/generated_at]         # JSON pointers left out of change detection and diffs
  - path: /sse/orders/{id}          # a template: one shared poller per distinct {id}
    upstream: legacy
    poll: /api/orders/{id}
    forward_headers: [Authorization]
    max_instances: 1000
proxy: legacy        # where every other request goes, unchanged (optional)
"#;
    let Checked {
        code,
        stdout,
        stderr,
        ..
    } = check_with_env(yaml, &[("LEGACY_TOKEN", "s3cret")]);
    assert!(code == 0, "{stderr}");
    assert!(
        stdout.contains("stream /sse/prices -> legacy /api/prices: every 1s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stream /sse/orders/{id} -> legacy /api/orders/{id}: every 2s"),
        "{stdout}"
    );
    assert!(stdout.contains("forwards [authorization]"), "{stdout}");
    assert!(
        stdout.contains("proxy: every other request to legacy"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("s3cret"),
        "secrets are never printed: {stdout}"
    );
}

#[test]
fn the_repos_gateway_yaml_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sse-gateway"))
        .args(["check", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unknown_key_is_refused() {
    refused(
        &format!("{GOOD}    intervall: 1s\n"),
        8,
        "streams[0].intervall",
        "unknown field `intervall`",
    );
}

#[test]
fn a_wrong_type_is_refused() {
    refused(
        &format!("{GOOD}    replay: lots\n"),
        8,
        "streams[0].replay",
        "invalid type",
    );
}

#[test]
fn a_bad_duration_is_refused() {
    refused(
        &format!("{GOOD}    interval: soon\n"),
        8,
        "streams[0].interval",
        "soon",
    );
}

#[test]
fn a_missing_upstream_is_refused() {
    refused(
        &GOOD.replace("upstream: legacy", "upstream: legacy2"),
        6,
        "streams[0].upstream",
        "no upstream named `legacy2`",
    );
}

#[test]
fn a_duplicate_path_is_refused() {
    let yaml = format!("{GOOD}  - path: /sse/prices\n    upstream: legacy\n");
    refused(
        &yaml,
        8,
        "streams[1].path",
        "two streams have the path `/sse/prices`",
    );
}

#[test]
fn a_poll_param_missing_from_path_is_refused() {
    refused(
        &GOOD.replace("poll: /api/prices", "poll: /api/prices/{id}"),
        7,
        "streams[0].poll",
        "`{id}` is not a parameter of path",
    );
}

#[test]
fn an_unset_environment_variable_is_refused() {
    let yaml = GOOD.replace(
        "    url: http://127.0.0.1:3000\n",
        "    url: http://127.0.0.1:3000\n    headers:\n      Authorization: \"Bearer ${LEGACY_TOKEN}\"\n",
    );
    refused(
        &yaml,
        5,
        "upstreams.legacy.headers.Authorization",
        "`LEGACY_TOKEN` is not set",
    );
}

#[test]
fn a_proxy_naming_a_missing_upstream_is_refused() {
    refused(
        &format!("{GOOD}proxy: nowhere\n"),
        8,
        "proxy",
        "no upstream named `nowhere`",
    );
}

#[test]
fn every_semantic_error_is_reported_at_once() {
    let yaml = GOOD.replace("upstream: legacy", "upstream: nope") + "proxy: nowhere\n";
    let Checked {
        code, stderr: err, ..
    } = check(&yaml);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 2, "{err}");
}

#[test]
fn a_yaml_syntax_error_names_its_line() {
    refused(
        &format!("{GOOD}  - path: [unclosed\n"),
        8,
        "streams[1].path",
        "",
    );
}

#[test]
fn a_header_both_static_and_forwarded_is_refused() {
    let yaml = GOOD.replace(
        "    url: http://127.0.0.1:3000\n",
        "    url: http://127.0.0.1:3000\n    headers: { Authorization: \"Bearer service\" }\n",
    ) + "    forward_headers: [authorization]\n";
    refused(
        &yaml,
        9,
        "streams[0].forward_headers[0]",
        "`authorization` is also set in upstreams.legacy.headers",
    );
}

#[test]
fn a_hop_by_hop_or_conditional_forwarded_header_is_refused() {
    for h in ["Host", "If-None-Match", "Connection", "Proxy-Authorization"] {
        refused(
            &format!("{GOOD}    forward_headers: [{h}]\n"),
            8,
            "streams[0].forward_headers[0]",
            "cannot be forwarded",
        );
    }
}

#[test]
fn a_duration_past_a_year_is_refused_not_a_panic() {
    for key in [
        "interval",
        "retry",
        "heartbeat",
        "idle",
        "backoff_max",
        "timeout",
    ] {
        refused(
            &format!("{GOOD}    {key}: 1000000000y\n"),
            8,
            &format!("streams[0].{key}"),
            "at most a year",
        );
    }
}

#[test]
fn an_empty_file_is_refused() {
    for yaml in ["", "# nothing yet\n", "listen: 0.0.0.0:8080\n"] {
        refused(yaml, 0, "streams", "nothing to serve");
    }
}

#[test]
fn an_admin_listener_off_loopback_without_a_token_is_refused() {
    refused(
        &format!("{GOOD}admin:\n  listen: 0.0.0.0:9090\n"),
        9,
        "admin.listen",
        "set `admin.token`",
    );
}

#[test]
fn a_cluster_section_is_checked_and_check_never_prints_its_secrets() {
    refused(
        &format!("{GOOD}cluster:\n  redis: redis://:s3cret@127.0.0.1:99999/0\n"),
        9,
        "cluster.redis",
        "not a URL like redis://",
    );
    let Checked { stderr, .. } = check(&format!(
        "{GOOD}cluster:\n  redis: redis://:s3cret@127.0.0.1:99999/0\n"
    ));
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let Checked {
        code,
        stdout,
        stderr,
        ..
    } = check_with_env(
        &format!(
            "{GOOD}    cluster: false\ncluster:\n  redis: ${{REDIS_URL}}\n  key_secret: ${{SSE_CLUSTER_SECRET}}\n"
        ),
        &[
            ("REDIS_URL", "rediss://:s3cret@127.0.0.1:6380/1"),
            ("SSE_CLUSTER_SECRET", "0123456789abcdef-s3cret"),
        ],
    );
    assert!(code == 0, "{stderr}");
    assert!(
        stdout.contains("cluster: redis rediss://:redacted@127.0.0.1:6380/1 as node "),
        "{stdout}"
    );
    assert!(
        stdout.contains(", cluster: false (in this process only)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("s3cret"),
        "secrets are never printed: {stdout}"
    );
}
