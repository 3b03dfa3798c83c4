//! `upstreams.<name>`: a base URL resolved once, and the headers every poll carries.

use std::net::SocketAddr;

use http::{HeaderName, HeaderValue};

use super::super::file::UpstreamFile;
use super::super::Upstream;
use super::env::expand;
use super::errors::Errors;

pub(super) fn upstream(
    errs: &mut Errors,
    name: &str,
    up: &UpstreamFile,
    env: &dyn Fn(&str) -> Option<String>,
    resolve: &dyn Fn(&str, u16) -> Option<SocketAddr>,
) -> Option<Upstream> {
    let key = format!("upstreams.{name}.url");
    let headers = headers(errs, name, up, env);
    let raw = expand(errs, &key, &up.url, env)?;
    let url = match url::Url::parse(&raw) {
        Ok(u) => u,
        Err(e) => {
            errs.add(key, format!("`{raw}` is not a URL: {e}"));
            return None;
        }
    };
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            errs.add(key, format!("scheme `{other}` is not http or https"));
            return None;
        }
    };
    if url.query().is_some() || url.fragment().is_some() {
        errs.add(key, "must not have a query or fragment");
        return None;
    }
    let Some(host) = url
        .host_str()
        .map(|h| h.trim_matches(['[', ']']).to_string())
    else {
        errs.add(key, "has no host");
        return None;
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => match resolve(&host, port) {
            Some(a) => a,
            None => {
                errs.add(key, format!("cannot resolve host `{host}`"));
                return None;
            }
        },
    };
    Some(Upstream {
        name: name.to_string(),
        url,
        addr,
        tls,
        host,
        headers: headers?,
    })
}

/// The headers with `${VAR}`s expanded; `None` once any of them is refused (after reporting
/// them all).
fn headers(
    errs: &mut Errors,
    name: &str,
    up: &UpstreamFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let mut headers = Vec::new();
    let mut ok = true;
    for (h, v) in &up.headers {
        let hkey = format!("upstreams.{name}.headers.{h}");
        let Ok(hn) = HeaderName::from_bytes(h.as_bytes()) else {
            errs.add(hkey, format!("`{h}` is not a valid header name"));
            ok = false;
            continue;
        };
        let Some(v) = expand(errs, &hkey, v, env) else {
            ok = false;
            continue;
        };
        match HeaderValue::from_str(&v) {
            Ok(hv) => headers.push((hn, hv)),
            Err(_) => {
                errs.add(hkey, "not a valid header value");
                ok = false;
            }
        }
    }
    ok.then_some(headers)
}
