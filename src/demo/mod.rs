//! The built-in demo: a small JSON price ticker API, and the page at `/` that shows it live.
//! A leaf beside the layers: it imports nothing of the gateway, which polls it like any upstream.
//!
//! The ticker is a pure function of the clock (a random walk seeded by the second), so it needs
//! no state and answers conditional requests: its ETag is the second it describes.

#[cfg(test)]
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::{header, HeaderValue, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Map, Value};

/// The demo page: the gateway's browser client, following one stream.
const PAGE: &str = include_str!("page.html");

/// The page, importing the client from where this gateway serves it (`client_script`).
pub fn page(client_script: &str) -> String {
    // The config allows only unreserved characters in the path: it is safe inside the quotes.
    PAGE.replace("\"/_gateway/client.js\"", &format!("\"{client_script}\""))
}

/// Symbol, what it is, and the price it wanders around. The descriptions make the document what
/// a real quote feed is: mostly fields that never change, so a change is a patch much smaller
/// than the document (the gateway sends a snapshot whenever a patch would cost more).
const SYMBOLS: [(&str, &str, f64); 5] = [
    (
        "EUR/USD",
        "Euro against the US dollar, spot, mid price",
        1.0850,
    ),
    (
        "GBP/USD",
        "Pound sterling against the US dollar, spot, mid price",
        1.2650,
    ),
    (
        "USD/JPY",
        "US dollar against the Japanese yen, spot, mid price",
        151.20,
    ),
    (
        "BTC/USD",
        "Bitcoin against the US dollar, composite of major venues",
        64000.0,
    ),
    (
        "ETH/USD",
        "Ether against the US dollar, composite of major venues",
        3400.0,
    ),
];

/// A unit struct: `DemoApi` is its own constructor.
pub struct DemoApi;

/// The ticker at second `t`: each price walks from its base; about half move each second.
pub fn prices(t: u64) -> Value {
    let mut quotes = Map::new();
    for (i, (symbol, name, base)) in SYMBOLS.iter().enumerate() {
        // 60 steps of a walk seeded by (second, symbol): deterministic, different every second.
        let walk: f64 = (0..60)
            .map(|k| {
                let h = mix(t.saturating_sub(k) ^ ((i as u64) << 40));
                (h % 2001) as f64 / 1000.0 - 1.0
            })
            .sum::<f64>()
            / 60.0;
        let digits = if *base > 1000.0 { 2 } else { 4 };
        let scale = 10f64.powi(digits);
        let price = (base * (1.0 + walk * 0.01) * scale).round() / scale;
        let moved = mix(t ^ ((i as u64) << 20)).is_multiple_of(2);
        quotes.insert(
            (*symbol).to_string(),
            json!({
                "price": price,
                "moved": moved,
                "open": base,
                "name": name,
                "venue": "sse-gateway demo feed",
            }),
        );
    }
    json!({ "generated_at": t, "quotes": quotes })
}

/// splitmix64: a cheap, well-spread hash for the walk.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[async_trait]
impl ServeHttp for DemoApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let etag = format!("\"{now}\"");
        let unchanged = req
            .headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes());
        // Digits in quotes are always a valid header value; without one the answer is still right.
        let etag = HeaderValue::from_str(&etag).ok();
        // Built without a fallible builder, so nothing can turn into an empty 200.
        let mut response = Response::new(Vec::new());
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if req.uri.path() != "/api/prices" {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            *response.body_mut() = b"the demo API serves /api/prices\n".to_vec();
            *response.status_mut() = StatusCode::NOT_FOUND;
        } else if unchanged {
            headers.extend(etag.map(|v| (header::ETAG, v)));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.extend(etag.map(|v| (header::ETAG, v)));
            *response.body_mut() = prices(now).to_string().into_bytes();
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_moves_every_second_and_is_stable_within_one() {
        assert_eq!(prices(1_000), prices(1_000));
        assert_ne!(prices(1_000)["quotes"], prices(1_001)["quotes"]);
    }

    #[test]
    fn a_tick_is_a_patch_smaller_than_the_document() {
        for t in 1_000..3_000 {
            let (old, new) = (prices(t), prices(t + 1));
            let snapshot = new.to_string().len();
            let patch = crate::codec::diff::json_patch(
                &old,
                &new,
                &Default::default(),
                usize::MAX,
                Duration::from_secs(1),
            )
            .expect("no budget to pass");
            assert!(patch.len() < snapshot, "{t}: {} vs {snapshot}", patch.len());
        }
    }
}
