//! A real `redis-server` for the cluster tests, on a free loopback port (never 6379, where a
//! system instance may run), without persistence, killed on drop. Tests kill, restart and pause it
//! to play the failures cluster mode promises to survive.
//!
//! Needs Debian's `redis-server` (.ci/run installs it). Elsewhere a test that needs it says why it
//! did not run and passes, and fails if `CI` is set (as tests/it/browser.rs does for chromium).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// How long one command to the test's Redis may take: a paused server never answers.
const COMMAND_TIME: Duration = Duration::from_secs(1);

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Serving TLS only, with this self-signed certificate for `localhost` (PEM).
    tls: Option<std::path::PathBuf>,
}

impl Redis {
    /// A fresh, empty server; `None` (after saying why) when `redis-server` is not installed.
    pub async fn start() -> Option<Redis> {
        Redis::start_with(false).await
    }

    /// The same, serving TLS only (`rediss://`), under a self-signed certificate for
    /// `localhost` at `certificate()`.
    pub async fn start_tls() -> Option<Redis> {
        Redis::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide redis-server (see .ci/run)"
            );
            eprintln!(
                "cluster test not run: redis-server is missing (apt-get install redis-server)"
            );
            return None;
        }
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            tls: None,
        };
        if tls {
            redis.tls = Some(redis.write_certificate());
        }
        // A port handed out twice fails to bind: try another.
        for _ in 0..3 {
            if redis.spawn().await {
                return Some(redis);
            }
            redis.port = free_port();
        }
        panic!("redis-server did not start:\n{}", redis.log());
    }

    /// `redis://127.0.0.1:<port>/0` (`rediss://localhost:<port>/0` with TLS), for the
    /// gateways' `cluster.redis`.
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://localhost:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// The certificate a TLS server presents, for a client to trust.
    pub fn certificate(&self) -> Option<&Path> {
        self.tls.as_deref()
    }

    fn write_certificate(&self) -> std::path::PathBuf {
        let names = vec!["localhost".to_string()];
        let cert = rcgen::generate_simple_self_signed(names).expect("a certificate");
        let (crt, key) = (
            self.dir.path().join("redis.crt"),
            self.dir.path().join("redis.key"),
        );
        std::fs::write(&crt, cert.cert.pem()).expect("write the certificate");
        std::fs::write(&key, cert.signing_key.serialize_pem()).expect("write the key");
        crt
    }

    /// SIGKILL: the server and everything it held are gone (nothing is persisted).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new, empty server on the same port, as after a restart without persistence or a
    /// failover to an empty replica.
    pub async fn restart(&mut self) {
        self.kill();
        let start = Instant::now();
        while !self.spawn().await {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "redis-server did not restart on port {}:\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// SIGSTOP: the server stops answering but keeps every TCP connection open, as a hung or
    /// partitioned server does; only a command's deadline notices.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: the paused server answers again, with its data intact.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Runs one command, e.g. `cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])`; fails the test if the
    /// server refuses it or does not answer within a second.
    pub async fn cmd(&self, args: &[&str]) -> redis::Value {
        match tokio::time::timeout(COMMAND_TIME, self.query(args)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("redis {args:?}: {e}"),
            Err(_) => panic!("redis {args:?}: no answer within {COMMAND_TIME:?}"),
        }
    }

    /// The key names under `prefix`, e.g. to check what the gateways store.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let pattern = format!("{prefix}*");
        match self.cmd(&["KEYS", &pattern]).await {
            redis::Value::Array(keys) => keys.iter().map(redis_text).collect(),
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }

    async fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args.first().copied().unwrap_or("PING"));
        for a in args.iter().skip(1) {
            cmd.arg(*a);
        }
        cmd.query_async(&mut con).await
    }

    /// Starts the server on `self.port` and waits until it answers PING; `false` if it exited
    /// (its port taken) or never answered.
    async fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let port = self.port.to_string();
        let listen: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port],
            Some(crt) => {
                let crt = crt.display().to_string();
                let key = self.dir.path().join("redis.key").display().to_string();
                let args = ["--port", "0", "--tls-port", &port, "--tls-cert-file", &crt];
                let more = ["--tls-key-file", &key, "--tls-ca-cert-file", &crt];
                let args = args
                    .iter()
                    .chain(&more)
                    .chain(&["--tls-auth-clients", "no"]);
                args.map(|a| a.to_string()).collect()
            }
        };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1"])
            .args(&listen)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args([
                "--loglevel",
                "warning",
                "--enable-debug-command",
                "local",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                eprintln!("redis-server exited:\n{}", self.log());
                self.child = None;
                return false;
            }
            if self.answers().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        false
    }

    /// PING answered; with TLS (which this test process does not trust), the port open.
    async fn answers(&self) -> bool {
        if self.tls.is_some() {
            let addr = ("127.0.0.1", self.port);
            return tokio::net::TcpStream::connect(addr).await.is_ok();
        }
        matches!(
            tokio::time::timeout(COMMAND_TIME, self.query(&["PING"])).await,
            Ok(Ok(_))
        )
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{name} redis-server");
    }

    fn log_path(&self) -> std::path::PathBuf {
        Path::new(self.dir.path()).join("redis.log")
    }

    /// What the server logged (warnings and worse).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// A bulk string as text; anything else as its debug form.
pub fn redis_text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
