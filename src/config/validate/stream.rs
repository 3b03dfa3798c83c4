//! One entry of `streams`, merged with `defaults` once: paths, upstream, timing, sizes,
//! forwarding and params are then each checked once, at the key that set them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::super::defaults::stream as sd;
use super::super::file::{IdleFile, Size, StreamFile, UpstreamFile};
use super::super::model::single_instance;
use super::super::{ArrayKeys, DiffMode, Idle, PathTemplate, Pattern, StreamSpec, Upstream};
use super::errors::{capped, Errors};
use super::size::size;

/// A value the stream or `defaults` set, with the key path of whichever set it.
struct Set<'a, T> {
    value: &'a T,
    at: String,
}

/// A stream's keys with `defaults` filled in; `None` where neither sets the key.
struct Merged<'a> {
    upstream: Option<Set<'a, String>>,
    interval: Option<Set<'a, Duration>>,
    timeout: Option<Set<'a, Duration>>,
    heartbeat: Option<Set<'a, Duration>>,
    retry: Option<Set<'a, Duration>>,
    backoff_max: Option<Set<'a, Duration>>,
    refresh_limit: Option<Set<'a, Duration>>,
    diff: Option<Set<'a, DiffMode>>,
    replay: Option<Set<'a, usize>>,
    replay_bytes: Option<Set<'a, Size>>,
    max_body: Option<Set<'a, Size>>,
    idle: Option<Set<'a, IdleFile>>,
    ignore: Option<Set<'a, Vec<String>>>,
    array_keys: Option<Set<'a, ArrayKeys>>,
    forward_headers: Option<Set<'a, Vec<String>>>,
    forward_query: Option<Set<'a, bool>>,
    max_instances: Option<Set<'a, usize>>,
    follow_redirects: Option<Set<'a, bool>>,
    cluster: Option<Set<'a, bool>>,
}

impl<'a> Merged<'a> {
    /// `path`, `poll`, `params` and `cors` are the stream's own, so they are not merged.
    fn new(key: &str, st: &'a StreamFile, d: &'a StreamFile) -> Merged<'a> {
        macro_rules! merge {
            ($field:ident) => {
                match (&st.$field, &d.$field) {
                    (Some(value), _) => Some(Set {
                        value,
                        at: format!("{key}.{}", stringify!($field)),
                    }),
                    (None, Some(value)) => Some(Set {
                        value,
                        at: format!("defaults.{}", stringify!($field)),
                    }),
                    (None, None) => None,
                }
            };
        }
        Merged {
            upstream: merge!(upstream),
            interval: merge!(interval),
            timeout: merge!(timeout),
            heartbeat: merge!(heartbeat),
            retry: merge!(retry),
            backoff_max: merge!(backoff_max),
            refresh_limit: merge!(refresh_limit),
            diff: merge!(diff),
            replay: merge!(replay),
            replay_bytes: merge!(replay_bytes),
            max_body: merge!(max_body),
            idle: merge!(idle),
            ignore: merge!(ignore),
            array_keys: merge!(array_keys),
            forward_headers: merge!(forward_headers),
            forward_query: merge!(forward_query),
            max_instances: merge!(max_instances),
            follow_redirects: merge!(follow_redirects),
            cluster: merge!(cluster),
        }
    }
}

/// The value set, or `default`.
fn or<T: Copy>(set: &Option<Set<'_, T>>, default: T) -> T {
    set.as_ref().map_or(default, |s| *s.value)
}

/// The upstreams as declared and as validated: a declared one that failed has its own error.
pub(super) struct Upstreams<'a> {
    pub declared: &'a BTreeMap<String, UpstreamFile>,
    pub valid: &'a BTreeMap<String, Arc<Upstream>>,
}

pub(super) fn stream(
    errs: &mut Errors,
    key: &str,
    st: &StreamFile,
    d: &StreamFile,
    ups: &Upstreams,
) -> Option<StreamSpec> {
    let before = errs.list.len();
    let m = Merged::new(key, st, d);
    let (path, poll) = paths(errs, key, st);
    let upstream = upstream(errs, key, &m, ups);
    let t = timing(errs, &m);
    let replay = or(&m.replay, sd::REPLAY);
    if let Some(set) = m.replay.as_ref().filter(|s| *s.value > 100_000) {
        errs.add(&set.at, "at most 100000");
    }
    let replay_bytes = size_or(errs, &m.replay_bytes, sd::REPLAY_BYTES);
    let max_body = size_or(errs, &m.max_body, sd::MAX_BODY);
    let idle = idle(errs, &m);
    let ignore = ignore(errs, &m);
    let array_keys = array_keys(errs, &m);
    let forward_headers = forward_headers(errs, &m, ups.declared);
    let forward_query = or(&m.forward_query, sd::FORWARD_QUERY);
    let params = match &path {
        Some(path) => params(errs, key, st, path),
        None => BTreeMap::new(),
    };
    let single = path
        .as_ref()
        .is_some_and(|p| single_instance(p, forward_query, &forward_headers));
    let max_instances = if single {
        1
    } else {
        or(&m.max_instances, sd::MAX_INSTANCES)
    };
    if let Some(set) = m
        .max_instances
        .as_ref()
        .filter(|s| *s.value == 0 && !single)
    {
        errs.add(&set.at, "must be at least 1");
    }
    if errs.list.len() > before {
        return None;
    }
    Some(StreamSpec {
        path: path?,
        poll: poll?,
        upstream: upstream?,
        interval: t.interval,
        timeout: t.timeout,
        heartbeat: t.heartbeat,
        retry: t.retry,
        backoff_max: t.backoff_max,
        diff: or(&m.diff, sd::DIFF),
        replay,
        replay_bytes,
        idle,
        ignore,
        array_keys,
        forward_headers,
        forward_query,
        max_instances,
        max_body,
        params,
        cors: None,
        follow_redirects: or(&m.follow_redirects, sd::FOLLOW_REDIRECTS),
        refresh_limit: t.refresh_limit,
        cluster: or(&m.cluster, sd::CLUSTER),
    })
}

/// `never`, or a duration held to a year like every other.
fn idle(errs: &mut Errors, m: &Merged) -> Idle {
    match &m.idle {
        None => sd::IDLE,
        Some(Set {
            value: IdleFile::Never,
            ..
        }) => Idle::Never,
        Some(Set {
            value: IdleFile::After(x),
            at,
        }) => Idle::After(capped(errs, at, *x)),
    }
}

/// `path`, and `poll` (the path by default), whose parameters must all be the path's.
fn paths(
    errs: &mut Errors,
    key: &str,
    st: &StreamFile,
) -> (Option<PathTemplate>, Option<PathTemplate>) {
    let path = match &st.path {
        None => {
            errs.add(key, "missing `path`");
            None
        }
        Some(p) => PathTemplate::parse(p)
            .map_err(|e| errs.add(format!("{key}.path"), e))
            .ok(),
    };
    let poll = st.poll.as_ref().or(st.path.as_ref()).and_then(|p| {
        PathTemplate::parse(p)
            .map_err(|e| errs.add(format!("{key}.poll"), e))
            .ok()
    });
    if let (Some(path), Some(poll)) = (&path, &poll) {
        for p in poll.params() {
            if !path.params().any(|q| q == p) {
                errs.add(
                    format!("{key}.poll"),
                    format!("`{{{p}}}` is not a parameter of path `{}`", path.as_str()),
                );
            }
        }
    }
    (path, poll)
}

fn upstream(errs: &mut Errors, key: &str, m: &Merged, ups: &Upstreams) -> Option<Arc<Upstream>> {
    let Some(Set { value: name, at }) = &m.upstream else {
        errs.add(key, "missing `upstream` (set it here or in defaults)");
        return None;
    };
    let found = ups.valid.get(*name).cloned();
    // A declared upstream that failed validation has its own error already.
    if found.is_none() && !ups.declared.contains_key(*name) {
        errs.add(at, format!("no upstream named `{name}`"));
    }
    found
}

struct Timing {
    interval: Duration,
    timeout: Duration,
    heartbeat: Duration,
    retry: Duration,
    backoff_max: Duration,
    refresh_limit: Duration,
}

fn timing(errs: &mut Errors, m: &Merged) -> Timing {
    let interval = duration(errs, &m.interval, sd::INTERVAL, true);
    let timeout = duration(errs, &m.timeout, sd::TIMEOUT, true);
    let heartbeat = duration(errs, &m.heartbeat, sd::HEARTBEAT, true);
    let retry = duration(errs, &m.retry, sd::RETRY, false);
    let refresh_limit = duration(errs, &m.refresh_limit, sd::refresh_limit(interval), true);
    let backoff_max = duration(errs, &m.backoff_max, sd::BACKOFF_MAX, false);
    Timing {
        interval,
        timeout,
        heartbeat,
        retry,
        backoff_max,
        refresh_limit,
    }
}

/// The duration set (at most a year, and more than zero when `nonzero`), or `default`.
fn duration(
    errs: &mut Errors,
    set: &Option<Set<'_, Duration>>,
    default: Duration,
    nonzero: bool,
) -> Duration {
    let Some(Set { value, at }) = set else {
        return default;
    };
    if nonzero && value.is_zero() {
        errs.add(at, "must be more than zero");
    }
    capped(errs, at, **value)
}

fn size_or(errs: &mut Errors, set: &Option<Set<'_, Size>>, default: usize) -> usize {
    set.as_ref()
        .and_then(|s| size(errs, &s.at, s.value))
        .unwrap_or(default)
}

/// JSON pointers (RFC 6901), checked here so that a bad one is an error with its line rather
/// than a pointer that never matches.
fn ignore(errs: &mut Errors, m: &Merged) -> Vec<String> {
    let Some(set) = &m.ignore else {
        return Vec::new();
    };
    let ignore = set.value.clone();
    for (i, p) in ignore.iter().enumerate() {
        if let Some(why) = not_a_pointer(p) {
            errs.add(format!("{}[{i}]", set.at), why);
        }
    }
    ignore
}

/// The diff follows which `array_keys` patterns match as it descends with one bit each, in a
/// `u64`.
const MAX_ARRAY_KEYS: usize = 64;

/// Pointers to arrays and the member keying each, checked like `ignore`: a pointer that can
/// never match would quietly leave its array diffed by index.
fn array_keys(errs: &mut Errors, m: &Merged) -> ArrayKeys {
    let Some(set) = &m.array_keys else {
        return ArrayKeys::new();
    };
    if set.value.len() > MAX_ARRAY_KEYS {
        errs.add(&set.at, format!("at most {MAX_ARRAY_KEYS} arrays"));
    }
    for (p, member) in set.value {
        let at = format!("{}.{p}", set.at);
        if let Some(why) = not_a_pointer(p) {
            errs.add(at, why);
        } else if member.is_empty() {
            errs.add(at, "the member that identifies an element can't be empty");
        }
    }
    set.value.clone()
}

/// Why `p` is not an RFC 6901 pointer into the document, if it isn't.
fn not_a_pointer(p: &str) -> Option<String> {
    let why = if !p.starts_with('/') {
        "it must start with `/`"
    } else if json_patch::jsonptr::Pointer::parse(p).is_err() {
        "a `~` must be followed by `0` or `1`"
    } else {
        return None;
    };
    Some(format!("`{p}` is not a JSON pointer (RFC 6901): {why}"))
}

fn forward_headers(
    errs: &mut Errors,
    m: &Merged,
    declared: &BTreeMap<String, UpstreamFile>,
) -> Vec<HeaderName> {
    let Some(Set { value: names, at }) = &m.forward_headers else {
        return Vec::new();
    };
    let static_headers = m
        .upstream
        .as_ref()
        .and_then(|n| declared.get(n.value).map(|u| (n.value, &u.headers)));
    let mut forward_headers = Vec::new();
    for (i, h) in names.iter().enumerate() {
        let hkey = format!("{at}[{i}]");
        let Ok(name) = HeaderName::from_bytes(h.as_bytes()) else {
            errs.add(hkey, format!("`{h}` is not a valid header name"));
            continue;
        };
        if let Some(why) = not_forwardable(&name) {
            errs.add(hkey, format!("`{name}` cannot be forwarded: {why}"));
            continue;
        }
        // reqwest appends, so a poll would carry both values, and most servers read the first:
        // the gateway's own credential would answer for every client (security review F3).
        if let Some((up, _)) = static_headers
            .filter(|(_, hs)| hs.keys().any(|s| s.eq_ignore_ascii_case(name.as_str())))
        {
            errs.add(
                hkey,
                format!(
                    "`{name}` is also set in upstreams.{up}.headers: a poll must carry either \
                     the gateway's value or the client's, never both"
                ),
            );
            continue;
        }
        forward_headers.push(name);
    }
    forward_headers
}

/// A full-match pattern for each parameter of `path`: the stream's own, or `sd::PARAM`.
fn params(
    errs: &mut Errors,
    key: &str,
    st: &StreamFile,
    path: &PathTemplate,
) -> BTreeMap<String, Pattern> {
    let own = st.params.clone().unwrap_or_default();
    for name in own.keys() {
        if !path.params().any(|p| p == name) {
            errs.add(
                format!("{key}.params.{name}"),
                format!("`{name}` is not a parameter of path `{}`", path.as_str()),
            );
        }
    }
    let mut params = BTreeMap::new();
    for name in path.params() {
        let pattern = own
            .get(name)
            .map_or_else(|| sd::PARAM.to_string(), |p| format!("^(?:{p})$"));
        match Pattern::new(&pattern) {
            Ok(re) => {
                params.insert(name.to_string(), re);
            }
            Err(e) => errs.add(format!("{key}.params.{name}"), format!("bad regex: {e}")),
        }
    }
    params
}

/// Why a header makes no sense in `forward_headers`, if it doesn't.
fn not_forwardable(name: &HeaderName) -> Option<&'static str> {
    use http::header::*;
    let n = name.as_str();
    if name == HOST {
        Some("the upstream's Host comes from its URL; the client's would pick another virtual host")
    } else if [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ]
    .contains(name)
    {
        Some("the gateway makes its own conditional requests; a client's could leave the instance without a document")
    } else if [
        CONNECTION,
        TRANSFER_ENCODING,
        TE,
        TRAILER,
        UPGRADE,
        CONTENT_LENGTH,
    ]
    .contains(name)
        || n == "keep-alive"
        || n.starts_with("proxy-")
    {
        Some("a hop-by-hop or framing header describes the client's connection, not the poll (RFC 9110 §7.6.1)")
    } else {
        None
    }
}
