//! A scripted `Source` for tests under paused time: the answers it gives, and when it was asked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::source::Source;
use super::StreamKey;
use crate::config::StreamSpec;
use crate::upstream::{FetchError, Fetched, Validators};

type Answer = Result<Fetched, FetchError>;

/// Answers the `n`th request (from 0) with `answer(n)` and records the instant of each.
pub struct Script {
    answer: Mutex<Box<dyn FnMut(usize) -> Answer + Send>>,
    asked: Mutex<Vec<Instant>>,
}

impl Script {
    pub fn new(answer: impl FnMut(usize) -> Answer + Send + 'static) -> Arc<Script> {
        Arc::new(Script {
            answer: Mutex::new(Box::new(answer)),
            asked: Mutex::new(Vec::new()),
        })
    }

    /// When each request came, from the first.
    pub fn asked(&self) -> Vec<Instant> {
        self.asked.lock().unwrap().clone()
    }

    /// The time between one request and the next.
    pub fn gaps(&self) -> Vec<Duration> {
        self.asked().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

#[async_trait::async_trait]
impl Source for Script {
    async fn get(&self, _: &StreamSpec, _: &StreamKey, _: &Validators) -> Answer {
        let n = {
            let mut asked = self.asked.lock().unwrap();
            asked.push(Instant::now());
            asked.len() - 1
        };
        (self.answer.lock().unwrap())(n)
    }
}

/// A 200 with a JSON body.
pub fn body(json: &str) -> Answer {
    Ok(Fetched::Body {
        body: Bytes::from(json.to_string()),
        validators: Validators::default(),
        json: true,
    })
}
