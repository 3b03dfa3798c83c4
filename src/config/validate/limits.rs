//! `limits` and the proxy's forwarding keys: each unset key takes its default.

use super::super::defaults::{FORWARDING, LIMITS};
use super::super::file::{File, LimitsFile};
use super::super::{Forwarding, Limits};
use super::errors::{positive, Errors};
use super::size::size;

pub(super) fn limits(errs: &mut Errors, l: Option<&LimitsFile>) -> Limits {
    let unset = LimitsFile::default();
    let l = l.unwrap_or(&unset);
    if l.max_clients == Some(0) {
        errs.add("limits.max_clients", "must be at least 1");
    }
    if l.max_connections == Some(0) {
        errs.add("limits.max_connections", "must be at least 1");
    }
    let d = &LIMITS;
    Limits {
        max_clients: l.max_clients.unwrap_or(d.max_clients),
        write_timeout: positive(
            errs,
            "limits.write_timeout",
            l.write_timeout,
            d.write_timeout,
        ),
        max_connections: l.max_connections,
        max_clients_per_ip: l.max_clients_per_ip.unwrap_or(d.max_clients_per_ip),
        head_timeout: positive(errs, "limits.head_timeout", l.head_timeout, d.head_timeout),
        keepalive: positive(errs, "limits.keepalive", l.keepalive, d.keepalive),
        proxy_connect_timeout: positive(
            errs,
            "limits.proxy_connect_timeout",
            l.proxy_connect_timeout,
            d.proxy_connect_timeout,
        ),
        proxy_timeout: positive(
            errs,
            "limits.proxy_timeout",
            l.proxy_timeout,
            d.proxy_timeout,
        ),
        proxy_max_body: l
            .proxy_max_body
            .as_ref()
            .and_then(|s| size(errs, "limits.proxy_max_body", s))
            .map_or(d.proxy_max_body, |n| n as u64),
    }
}

pub(super) fn forwarding(errs: &mut Errors, file: &File) -> Forwarding {
    Forwarding {
        trust: file.proxy_trust_forwarded.unwrap_or(FORWARDING.trust),
        preserve_host: file.preserve_host.unwrap_or(FORWARDING.preserve_host),
        resolve_interval: positive(
            errs,
            "proxy_resolve_interval",
            file.proxy_resolve_interval,
            FORWARDING.resolve_interval,
        ),
    }
}
