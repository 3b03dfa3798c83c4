//! Where a poller gets its document: one upstream GET, behind a trait so tests can script it.

use crate::config::StreamSpec;
use crate::hub::StreamKey;
use crate::upstream::{self, FetchError, Fetched, Validators};

/// The GET a poller makes for each poll. `Upstream` in production; tests script the answers.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// Fetches `key`'s target from `spec`'s upstream, conditionally on `validators`.
    async fn get(
        &self,
        spec: &StreamSpec,
        key: &StreamKey,
        validators: &Validators,
    ) -> Result<Fetched, FetchError>;
}

/// `upstream::fetch` with the gateway's HTTP clients.
pub struct Upstream(pub upstream::Clients);

#[async_trait::async_trait]
impl Source for Upstream {
    async fn get(
        &self,
        spec: &StreamSpec,
        key: &StreamKey,
        validators: &Validators,
    ) -> Result<Fetched, FetchError> {
        let request = upstream::Request {
            url: target_url(spec, &key.target),
            headers: &spec.upstream.headers,
            forwarded: &key.forwarded,
            timeout: spec.timeout,
            max_body: spec.max_body,
            validators,
        };
        upstream::fetch(self.0.get(spec.follow_redirects), request).await
    }
}

/// `base` + the instance's path and query; config validation guarantees the base has neither
/// query nor fragment, so concatenation is exact.
pub(crate) fn target_url(spec: &StreamSpec, target: &str) -> url::Url {
    let base = spec.upstream.url.as_str().trim_end_matches('/');
    url::Url::parse(&format!("{base}{target}")).unwrap_or_else(|_| spec.upstream.url.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_appended_to_the_base_path() {
        let spec = crate::hub::fixtures::spec("");
        assert_eq!(
            target_url(&spec, "/a/b?x=1").as_str(),
            "http://127.0.0.1:1/base/a/b?x=1"
        );
    }
}
