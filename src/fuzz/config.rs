//! The config loader against any text: a `Config` or errors that each point into the file,
//! never a panic. Arbitrary text mostly dies in the YAML parser, so most cases start from a valid
//! config and break it a little, which reaches validation and the key index.

use std::net::SocketAddr;

use proptest::prelude::*;

use crate::config::{self, Config, ConfigErrors};

/// Every feature of gateway.yaml, valid as written; addresses are IPs so nothing resolves.
const VALID: &str = r#"listen: 127.0.0.1:8080
threads: 2
upstreams:
  api:
    url: http://127.0.0.1:3000/v1
    headers: { X-Api-Key: "${TOKEN}", X-Plain: "a" }
  other:
    url: https://api.internal
defaults:
  interval: 2s
  timeout: 5s
  upstream: api
  idle: 30s
  diff: json-patch
  replay: 256
  replay_bytes: 4MiB
streams:
  - path: /sse/prices
    poll: /api/prices
    interval: 1s
    ignore: [/generated_at]
    array_keys: { /quotes: symbol, "/venues/*/quotes": symbol }
  - path: /sse/orders/{id}
    poll: /api/orders/{id}
    params: { id: "[0-9]+" }
    forward_headers: [authorization]
    forward_query: true
    max_instances: 10
    refresh_limit: 250ms
    max_body: 512KiB
    heartbeat: 15s
    retry: 3s
    backoff_max: 60s
    idle: never
    diff: merge-patch
    cors:
      origins: [https://app.example.com]
      credentials: true
  - path: /sse/users/{user}/feed
    upstream: other
    diff: snapshot
    cluster: false
proxy: api
proxy_trust_forwarded: false
preserve_host: false
proxy_resolve_interval: 30s
limits:
  max_clients: 100
  write_timeout: 10s
  max_connections: 200
  max_clients_per_ip: 0
  head_timeout: 10s
  keepalive: 60s
  proxy_connect_timeout: 10s
  proxy_timeout: 60s
  proxy_max_body: 1MiB
shutdown:
  grace: 5s
  upgrade_sock: up.sock
cors:
  origins: ["*"]
admin:
  listen: 127.0.0.1:9090
  token: "${TOKEN}"
demo:
  listen: 127.0.0.1:3001
  page: true
tls:
  cert: tls.crt
  key: tls.key
cluster:
  redis: rediss://:${TOKEN}@127.0.0.1:6379/0
  prefix: sse-gateway
  node_id: gw-1
  key_secret: "${TOKEN}-0123456789abcdef"
  lease_ttl: 3s
  timeout: 500ms
  on_redis_down: local
  history_ttl: 24h
"#;

fn env(var: &str) -> Option<String> {
    (var == "TOKEN").then(|| "t0k".to_string())
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host == "api.internal").then(|| SocketAddr::from(([10, 0, 0, 1], port)))
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    config::parse("fuzz.yaml", text, &env, &resolve)
}

/// The laws of any outcome: a config that can be described, or errors that each name a key and
/// a place (line and column from 1, or none for a key in no line of the file) and print as
/// `file:line:col: key: msg` (`file: key: msg` without a place).
fn check(text: &str, outcome: &Result<Config, ConfigErrors>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(c) => {
            prop_assert!(!c.describe().is_empty());
            for s in &c.streams {
                prop_assert!(!s.interval.is_zero() && !s.timeout.is_zero());
                prop_assert!(s.max_instances >= 1 && s.replay <= 100_000);
                prop_assert!(s.params.len() == s.path.params().count());
            }
            if let Some(cl) = &c.cluster {
                // A lease outlives a few Redis command timeouts, on every shared stream.
                for s in c.streams.iter().filter(|s| s.cluster) {
                    prop_assert!(cl.lease_ttl(s.interval) >= cl.timeout * 2);
                }
                if let Some(pw) = cl.redis.password() {
                    let shown = cl.shown_redis();
                    prop_assert!(!shown.contains(&format!(":{pw}@")), "{shown}");
                }
            }
        }
        Err(errs) => {
            prop_assert!(!errs.0.is_empty(), "an Err with no error");
            // serde_yaml may point one line past the end, at the end of input.
            let lines = yaml_lines(text) + 1;
            for e in &errs.0 {
                // A place from 1, or none at all (line 0) for a key in no line of the file.
                let placed = e.line >= 1 && e.line <= lines.max(1) && e.col >= 1;
                prop_assert!(placed || (e.line, e.col) == (0, 0), "{e}\n{text:?}");
                if e.line == 0 {
                    let top = e.key.split(['.', '[']).next().unwrap_or_default();
                    let written = text.lines().any(|l| l.starts_with(&format!("{top}:")));
                    prop_assert!(!written, "`{top}` is in the file: {e}\n{text:?}");
                }
                prop_assert!(!e.key.is_empty(), "{e}\n{text:?}");
                prop_assert!(!e.msg.is_empty(), "{e}\n{text:?}");
                let parent = e
                    .key
                    .rfind(['.', '['])
                    .map_or(e.key.as_str(), |i| &e.key[..i]);
                prop_assert!(
                    !e.msg.starts_with(&format!("{parent}: ")),
                    "key said twice: {e}"
                );
                let head = match e.line {
                    0 => format!("fuzz.yaml: {}: ", e.key),
                    _ => format!("fuzz.yaml:{}:{}: {}: ", e.line, e.col, e.key),
                };
                prop_assert!(e.to_string().starts_with(&head), "{e}");
            }
        }
    }
    Ok(())
}

/// Values that have broken parsers: huge numbers and durations, YAML's own syntax, odd unicode.
fn nasty_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1000000000y".to_string()),
        Just("18446744073709551615s".to_string()),
        Just("99999999999999999999".to_string()),
        Just("18446744073709551616".to_string()),
        Just("99999999999999999999GiB".to_string()),
        Just("18446744073709551615".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("0s".to_string()),
        Just("1e400".to_string()),
        Just(".nan".to_string()),
        Just("~".to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("{ a: 1 }".to_string()),
        Just("[1, [2, [3]]]".to_string()),
        Just("&a 1".to_string()),
        Just("*a".to_string()),
        Just("*undefined".to_string()),
        Just("!!binary aGVsbG8=".to_string()),
        Just("!custom tag".to_string()),
        Just("|\n  block".to_string()),
        Just(">-".to_string()),
        Just("\"\\u0000\\ud800\"".to_string()),
        Just("'it''s'".to_string()),
        Just("\"unterminated".to_string()),
        Just("${TOKEN}".to_string()),
        Just("${UNSET}".to_string()),
        Just("${".to_string()),
        Just("$${TOKEN}".to_string()),
        Just("/{id}/{id}".to_string()),
        Just("/a{b}".to_string()),
        Just("/{".to_string()),
        Just("http://[::1]:99999".to_string()),
        Just("http://user@:0/".to_string()),
        Just("\u{202e}\u{feff}\u{fffd}🦀".to_string()),
        Just("\t".to_string()),
        Just("x".repeat(5000)),
        Just(format!("{}{}", "[".repeat(300), "]".repeat(300))),
        Just(format!("{}{}", "{a: ".repeat(200), "}".repeat(200))),
        "\\PC{0,20}",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| format!("{n}ms")),
        any::<u64>().prop_map(|n| format!("{n}h")),
    ]
}

/// One small edit of a config, at a line chosen by an index (taken modulo the line count).
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Duplicate(usize),
    /// Keep the key, replace what follows `:` (or the whole line).
    SetValue(usize, String),
    Insert(usize, String),
    Indent(usize, usize),
    Dedent(usize),
    Tab(usize),
    /// Cut the text at a byte offset (taken modulo its length, on a char boundary).
    Truncate(usize),
    AnchorAndAlias(usize, usize),
}

/// Weighted so that most edited files still parse as YAML and reach validation.
fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        4 => (at, nasty_value()).prop_map(|(i, v)| Edit::SetValue(i, v)),
        // Quoted, so YAML takes any value as a string and validation has to judge it.
        4 => (at, nasty_value()).prop_map(|(i, v)| {
            let quoted = serde_json::Value::String(v).to_string();
            Edit::SetValue(i, quoted)
        }),
        2 => at.prop_map(Edit::Delete),
        1 => at.prop_map(Edit::Duplicate),
        1 => (at, "\\PC{0,30}").prop_map(|(i, v)| Edit::Insert(i, v)),
        1 => (at, nasty_value()).prop_map(|(i, v)| Edit::Insert(i, format!("  key: {v}"))),
        1 => (at, 1..40usize).prop_map(|(i, n)| Edit::Indent(i, n)),
        1 => at.prop_map(Edit::Dedent),
        1 => at.prop_map(Edit::Tab),
        1 => at.prop_map(Edit::Truncate),
        2 => (at, at).prop_map(|(i, j)| Edit::AnchorAndAlias(i, j)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match e {
            Edit::Delete(i) => {
                lines.remove(i % n);
            }
            Edit::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::SetValue(i, v) => {
                let l = &mut lines[i % n];
                *l = match l.find(':') {
                    Some(c) => format!("{} {v}", &l[..=c]),
                    None => v.clone(),
                };
            }
            Edit::Insert(i, v) => lines.insert(i % (n + 1), v.clone()),
            Edit::Indent(i, k) => lines[i % n].insert_str(0, &" ".repeat(*k)),
            Edit::Dedent(i) => {
                let l = &mut lines[i % n];
                *l = l.trim_start().to_string();
            }
            Edit::Tab(i) => lines[i % n].insert(0, '\t'),
            Edit::Truncate(i) => {
                let mut all = lines.join("\n");
                let mut cut = i % (all.len() + 1);
                while !all.is_char_boundary(cut) {
                    cut -= 1;
                }
                all.truncate(cut);
                lines = all.lines().map(str::to_string).collect();
            }
            Edit::AnchorAndAlias(i, j) => {
                let (i, j) = (i % n, j % n);
                if let Some(c) = lines[i].find(": ") {
                    lines[i].insert_str(c + 2, "&a ");
                }
                if let Some(c) = lines[j].find(':') {
                    let key = lines[j][..=c].to_string();
                    lines[j] = format!("{key} *a");
                }
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Aliases that expand exponentially, and nesting deeper than any parser's stack should allow.
fn bombs() -> Vec<String> {
    let mut laughs =
        String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for k in 1..10 {
        let prev = char::from(b'a' + k - 1);
        let this = char::from(b'a' + k);
        let refs = vec![format!("*{prev}"); 9].join(",");
        laughs.push_str(&format!("{this}: &{this} [{refs}]\n"));
    }
    laughs.push_str("listen: *j\n");
    let deep_block: String = (0..2000)
        .map(|d| format!("{}k{d}:\n", " ".repeat(d)))
        .collect();
    let deep_list: String = (0..2000)
        .map(|d| format!("{}- \n", " ".repeat(d * 2)))
        .collect();
    vec![
        laughs,
        format!("streams: {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        format!("upstreams: {}\n", "{a: ".repeat(10_000)),
        format!("streams:\n{deep_list}"),
        deep_block,
        format!("defaults:\n{}", "  ".repeat(5000)),
    ]
}

#[test]
fn fuzz_config_survives_alias_bombs_and_deep_nesting() {
    for text in bombs() {
        let outcome = parse(&text);
        check(&text, &outcome).unwrap();
    }
}

#[test]
fn fuzz_config_the_base_is_valid() {
    // Otherwise every mutation below would test an already broken file.
    let c = parse(VALID).unwrap();
    assert_eq!(c.streams.len(), 3);
}

proptest! {
    #![proptest_config(super::config(256))]

    #[test]
    fn fuzz_config_any_text(text in "\\PC{0,200}") {
        let outcome = parse(&text);
        check(&text, &outcome)?;
    }

    #[test]
    fn fuzz_config_any_yaml_shaped_text(
        text in "((  |- |\t)*[a-z_{}\\[\\]&*!|>\"':#, -]{0,12}(: [a-z0-9\\[\\]{}&*\"' ]{0,10})?\r?\n){0,30}"
    ) {
        let outcome = parse(&text);
        check(&text, &outcome)?;
    }

    #[test]
    fn fuzz_config_a_valid_file_with_a_few_edits(edits in prop::collection::vec(edit(), 1..4)) {
        let text = apply(VALID, &edits);
        let outcome = parse(&text);
        check(&text, &outcome)?;
        // Deterministic: the same text gives the same answer.
        let again = parse(&text);
        prop_assert_eq!(outcome.err(), again.err());
    }
}

proptest! {
    #![proptest_config(super::config(64))]

    /// `load` reads a file: bytes that are not UTF-8 are refused whole, at the fallback place
    /// `line 0, key (file)`, pointing at no line.
    #[test]
    fn fuzz_config_load_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.yaml");
        std::fs::write(&path, &bytes).unwrap();
        match config::load(&path) {
            Ok(c) => prop_assert!(std::str::from_utf8(&bytes).is_ok() && !c.describe().is_empty()),
            Err(errs) => match std::str::from_utf8(&bytes) {
                Ok(text) => {
                    let text = text.to_string();
                    // `load` names the file by its path; compare what follows.
                    for e in &errs.0 {
                        let placed = (e.line >= 1 && e.col >= 1) || (e.line, e.col) == (0, 0);
                        prop_assert!(placed && !e.key.is_empty(), "{e}");
                    }
                    prop_assert!(parse(&text).is_err());
                }
                Err(_) => {
                    prop_assert_eq!(errs.0.len(), 1);
                    prop_assert_eq!((errs.0[0].line, errs.0[0].key.as_str()), (0, "(file)"));
                }
            },
        }
    }
}

/// Lines as YAML 1.1 counts them (what serde_yaml's parser reports): CR, LF and CRLF end a line,
/// and so do NEL, LS and PS (U+0085, U+2028, U+2029), which `str::lines` does not know.
fn yaml_lines(text: &str) -> usize {
    let text = text.replace("\r\n", "\n");
    let is_break = |c: char| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}');
    let breaks = text.chars().filter(|&c| is_break(c)).count();
    let unended = text.chars().last().is_some_and(|c| !is_break(c));
    breaks + usize::from(unended)
}

#[test]
fn yaml_counts_a_line_separator_as_a_line_break() {
    assert_eq!(yaml_lines("a\nb\n"), "a\nb\n".lines().count());
    assert_eq!(yaml_lines("a\r\nb"), 2);
    assert_eq!(yaml_lines("a: '\u{2028}'\nb: 1\n"), 3);
    assert_eq!(yaml_lines(""), 0);
}
