//! `client_script`: where the browser client is served, on a path no stream can also claim.

use std::sync::Arc;

use super::super::defaults;
use super::super::file::ClientScriptFile;
use super::super::StreamSpec;
use super::errors::Errors;

/// The path to serve the client at, or `None` when it is off.
pub(super) fn client_script(
    errs: &mut Errors,
    set: Option<&ClientScriptFile>,
    streams: &[Arc<StreamSpec>],
    demo_page: bool,
) -> Option<String> {
    let path = match set {
        None | Some(ClientScriptFile::On(true)) => defaults::CLIENT_SCRIPT,
        Some(ClientScriptFile::On(false)) => {
            if demo_page {
                errs.add(
                    "client_script",
                    "the demo page (`demo.page`) loads the client from here: keep it on, or set `demo.page: false`",
                );
            }
            return None;
        }
        Some(ClientScriptFile::At(p)) => p,
    };
    // A request path compared as it arrives, and written into the demo page's script: unreserved
    // characters only (RFC 3986 §2.3), so no query, fragment, escape or quote; and never `//`,
    // which a URL reads as another host.
    let plain = path.starts_with('/')
        && !path.starts_with("//")
        && path != "/"
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._~-".contains(&b));
    if !plain {
        errs.add(
            "client_script",
            format!("`{path}` is not a path like /_gateway/client.js (or true, or false)"),
        );
        return None;
    }
    if let Some(spec) = streams.iter().find(|s| s.path.match_path(path).is_some()) {
        errs.add(
            "client_script",
            format!(
                "`{path}` is also the stream `{}`: pick another path",
                spec.path.as_str()
            ),
        );
        return None;
    }
    Some(path.to_string())
}
