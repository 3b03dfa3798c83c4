//! The command connection to Redis, and whether Redis answers.
//!
//! Every command has a deadline: a paused or cut-off Redis keeps its TCP connection open, so only
//! a deadline notices it. A connection that missed one is dropped and made again on the next
//! command, since a reply that comes late would otherwise answer a later request.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisError, ScriptInvocation, ServerErrorKind,
    Value,
};
use tracing::{info, warn};

use super::counts::Counts;

/// Redis did not answer in time, or refused: the command's effect is unknown.
#[derive(Debug, thiserror::Error)]
pub enum Down {
    #[error("redis did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("redis: {0}")]
    Failed(#[from] RedisError),
}

pub struct Conn {
    client: Client,
    timeout: Duration,
    live: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    /// The last failure's text, for `/readyz`.
    why: Mutex<Option<String>>,
    counts: Arc<Counts>,
}

impl Conn {
    pub fn new(client: Client, timeout: Duration, counts: Arc<Counts>) -> Conn {
        counts.redis_up.set(0);
        Conn {
            client,
            timeout,
            live: tokio::sync::Mutex::new(None),
            // Until the first command says otherwise: a start with Redis down logs it once.
            up: AtomicBool::new(true),
            why: Mutex::new(None),
            counts,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn why_down(&self) -> Option<String> {
        self.why.lock().clone()
    }

    pub async fn script(&self, call: &ScriptInvocation<'_>) -> Result<Value, Down> {
        self.deadline(async {
            let mut conn = self.connection().await?;
            call.invoke_async(&mut conn).await
        })
        .await
    }

    pub async fn cmd(&self, cmd: &Cmd) -> Result<Value, Down> {
        self.deadline(async {
            let mut conn = self.connection().await?;
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// Runs a command within the deadline; a failure drops the connection.
    async fn deadline(
        &self,
        command: impl Future<Output = Result<Value, RedisError>>,
    ) -> Result<Value, Down> {
        let result = match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Down::Failed(e)),
            Err(_) => Err(Down::TimedOut(self.timeout)),
        };
        match &result {
            Ok(_) => self.mark_up(),
            // A script error is a bug of ours, not Redis being down: keep the connection.
            Err(Down::Failed(e))
                if e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError) =>
            {
                warn!(error = %e, "redis refused a command");
            }
            Err(e) => {
                *self.live.lock().await = None;
                self.mark_down(e);
            }
        }
        result
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut live = self.live.lock().await;
        if let Some(c) = &*live {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *live = Some(c.clone());
        Ok(c)
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            info!("redis answers again");
        }
        *self.why.lock() = None;
        self.counts.redis_up.set(1);
    }

    fn mark_down(&self, e: &Down) {
        if self.up.swap(false, Ordering::AcqRel) {
            warn!(error = %e, "redis unavailable");
        }
        *self.why.lock() = Some(e.to_string());
        self.counts.redis_up.set(0);
    }
}
