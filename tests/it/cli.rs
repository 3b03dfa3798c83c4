//! The command line: help, version, check, and log formats.

use std::process::Command;

use serde_json::json;

use crate::support::*;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sse-gateway"))
        .args(args)
        .output()
        .expect("run sse-gateway")
}

#[test]
fn help_and_version_answer() {
    let help = run(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["--config", "--log-format", "check"] {
        assert!(text.contains(word), "{text}");
    }
    let version = run(&["--version"]);
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_missing_config_file_is_named() {
    let out = run(&["--config", "/nonexistent/gateway.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gateway.yaml"));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let cfg = Cfg::new(&up).stream("/sse/doc", "/doc");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("g.yaml");
    let admin = free_port();
    std::fs::write(&path, cfg.render(port, admin)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sse-gateway"))
        .args(["--log-format", "json", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("listening", || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(())
    })
    .await;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let first = logs.lines().next().expect("a log line");
    let line: serde_json::Value = serde_json::from_str(first).expect(first);
    assert!(
        line["level"].is_string() && line["fields"].is_object(),
        "{line}"
    );
}

#[test]
fn a_busy_listen_address_is_refused_at_once_with_its_name() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    let admin = free_port();
    let cfg = Cfg::at("http://127.0.0.1:9").stream_without_poll("/sse/doc");
    std::fs::write(&path, cfg.render(port, admin)).unwrap();
    let started = std::time::Instant::now();
    let out = run(&["--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (listen)")),
        "{stderr}"
    );
}
