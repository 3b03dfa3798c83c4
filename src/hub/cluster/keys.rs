//! How an instance is named in Redis: a keyed hash of what makes it an instance, so that
//! replicas agree on the name and Redis never holds a credential.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::hub::StreamKey;

/// The keys and channel of one stream instance. Every key carries the instance's hash as a
/// Redis hash tag (`{…}`), so one script's keys share a slot on Redis Cluster too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// 32 hex digits: the instance's name in Redis and in `/streams`.
    pub hash: String,
    /// Epoch, sequence, validators, last poll time, upstream status.
    pub meta: String,
    /// The recent frames: a Redis stream whose entry ids are the sequences.
    pub log: String,
    /// Who polls the instance now.
    pub lease: String,
    /// Where frames, statuses and ticks go out to every replica.
    pub channel: String,
    /// Set by replicas whose clients read a patch format, so the holder encodes it too.
    pub want_json_patch: String,
    pub want_merge_patch: String,
}

impl Keys {
    /// `secret` keys the hash; without it (no stream forwards headers, which validation
    /// guarantees) a plain SHA-256 of what names the instance.
    pub fn new(prefix: &str, secret: Option<&str>, key: &StreamKey) -> Keys {
        let hash = hash(secret, key);
        let at = |what: &str| format!("{prefix}:{{{hash}}}:{what}");
        Keys {
            meta: at("meta"),
            log: at("log"),
            lease: at("lease"),
            channel: at("ev"),
            want_json_patch: at("want:json-patch"),
            want_merge_patch: at("want:merge-patch"),
            hash,
        }
    }
}

/// The stream, the target and each forwarded header, separated by NUL (which none can hold),
/// so two different instances can't run together into one input.
fn hash(secret: Option<&str>, key: &StreamKey) -> String {
    let mut parts: Vec<&[u8]> = vec![key.stream.as_bytes(), key.target.as_bytes()];
    for (name, value) in &key.forwarded {
        parts.push(name.as_str().as_bytes());
        parts.push(value.as_bytes());
    }
    let digest: Vec<u8> = match secret {
        Some(secret) => {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
                // HMAC takes a key of any length: never reached.
                return String::new();
            };
            for p in &parts {
                mac.update(p);
                mac.update(&[0]);
            }
            mac.finalize().into_bytes().to_vec()
        }
        None => {
            let mut h = Sha256::new();
            for p in &parts {
                h.update(p);
                h.update([0]);
            }
            h.finalize().to_vec()
        }
    };
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header::AUTHORIZATION, HeaderValue};
    use std::sync::Arc;

    fn key(target: &str, auth: Option<&'static str>) -> StreamKey {
        StreamKey {
            stream: Arc::from("/o/{id}"),
            target: target.into(),
            forwarded: auth
                .map(|v| (AUTHORIZATION, HeaderValue::from_static(v)))
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn replicas_agree_on_names_and_credentials_never_reach_redis() {
        let a = Keys::new(
            "gw",
            Some("secret-secret-16"),
            &key("/o/1", Some("Bearer tok")),
        );
        let again = Keys::new(
            "gw",
            Some("secret-secret-16"),
            &key("/o/1", Some("Bearer tok")),
        );
        assert_eq!(a, again);
        assert_eq!(a.hash.len(), 32);
        assert_eq!(a.meta, format!("gw:{{{}}}:meta", a.hash));
        for k in [&a.meta, &a.log, &a.lease, &a.channel] {
            assert!(!k.contains("tok") && !k.contains("/o/1"), "{k}");
        }
        // Another credential, target, secret or prefix is another instance.
        let other_cred = Keys::new(
            "gw",
            Some("secret-secret-16"),
            &key("/o/1", Some("Bearer x")),
        );
        let other_target = Keys::new(
            "gw",
            Some("secret-secret-16"),
            &key("/o/2", Some("Bearer tok")),
        );
        let other_secret = Keys::new(
            "gw",
            Some("another-secret-1"),
            &key("/o/1", Some("Bearer tok")),
        );
        for o in [&other_cred, &other_target, &other_secret] {
            assert_ne!(o.hash, a.hash);
        }
        assert_ne!(
            Keys::new("gw2", None, &key("/o/1", None)).meta,
            Keys::new("gw", None, &key("/o/1", None)).meta
        );
        // "/o/1" + "" is not "/o/" + "1".
        let split = StreamKey {
            stream: Arc::from("/o/{id}/o/1"),
            target: String::new(),
            forwarded: vec![],
        };
        assert_ne!(
            Keys::new("gw", None, &split).hash,
            Keys::new("gw", None, &key("/o/1", None)).hash
        );
    }
}
