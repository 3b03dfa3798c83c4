//! The coordinator's side of the agents: start them (this same binary, `agent`), ask them all
//! a question, add up their answers.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

pub struct Agents {
    agents: Vec<Agent>,
}

/// The clients' state summed over every agent.
pub struct Status {
    pub connected: Vec<usize>,
    pub dropped: usize,
    pub attached: bool,
}

impl Status {
    pub fn total(&self) -> usize {
        self.connected.iter().sum()
    }
}

/// Where one change has got.
#[derive(Default)]
pub struct Reach {
    /// Clients that have it.
    pub clients: usize,
    /// Clients streaming.
    pub connected: usize,
    /// Gateways (bit i: gateway i) at least one client had it from.
    pub reached: u64,
    /// Gateways with clients streaming.
    pub streaming: u64,
}

impl Reach {
    /// Every streaming client has it.
    pub fn everywhere(&self) -> bool {
        self.connected > 0 && self.clients >= self.connected
    }

    /// A client of each gateway has it: every gateway has done its part with Redis.
    pub fn on_every_gateway(&self) -> bool {
        self.streaming != 0 && self.reached & self.streaming == self.streaming
    }
}

impl Agents {
    /// `clients` split evenly over `n` agents, each with every gateway's URL.
    pub fn start(
        n: usize,
        clients: usize,
        urls: &[String],
        sources: u8,
    ) -> std::io::Result<Agents> {
        let exe = std::env::current_exe()?;
        let n = n.max(1);
        let mut agents = Vec::new();
        for k in 0..n {
            let (first, end) = (clients * k / n, clients * (k + 1) / n);
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("agent")
                .args(["--clients", &(end - first).to_string()])
                .args(["--first", &first.to_string()])
                .args(["--sources", &sources.to_string()]);
            for u in urls {
                cmd.args(["--url", u]);
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(std::io::Error::other("agent started without pipes"));
            };
            let stdout = BufReader::new(stdout).lines();
            agents.push(Agent {
                child,
                stdin,
                stdout,
            });
        }
        Ok(Agents { agents })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.agents.iter().filter_map(|a| a.child.id()).collect()
    }

    /// Every agent's answer to `question` (an agent that died answers `null`).
    pub async fn ask(&mut self, question: &str) -> Vec<Value> {
        let line = format!("{question}\n");
        for a in &mut self.agents {
            let _ = a.stdin.write_all(line.as_bytes()).await;
            let _ = a.stdin.flush().await;
        }
        let mut answers = Vec::new();
        for a in &mut self.agents {
            let text = a
                .stdout
                .next_line()
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            answers.push(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        answers
    }

    pub async fn status(&mut self, gateways: usize) -> Status {
        let answers = self.ask("status").await;
        let mut s = Status {
            connected: vec![0; gateways],
            dropped: 0,
            attached: true,
        };
        for a in answers {
            for (i, c) in a["connected"].as_array().into_iter().flatten().enumerate() {
                if let Some(slot) = s.connected.get_mut(i) {
                    *slot += c.as_u64().unwrap_or(0) as usize;
                }
            }
            s.dropped += a["dropped"].as_u64().unwrap_or(0) as usize;
            s.attached &= a["attached"].as_bool().unwrap_or(false);
        }
        s
    }

    /// How far `seq` has got.
    pub async fn count(&mut self, seq: u64) -> Reach {
        let answers = self.ask(&format!("count {seq}")).await;
        let mut r = Reach::default();
        for a in answers {
            r.clients += a["n"].as_u64().unwrap_or(0) as usize;
            r.reached |= a["reached"].as_u64().unwrap_or(0);
            for (i, c) in a["connected"].as_array().into_iter().flatten().enumerate() {
                let c = c.as_u64().unwrap_or(0) as usize;
                r.connected += c;
                if c > 0 {
                    r.streaming |= 1 << (i % 64);
                }
            }
        }
        r
    }

    /// Every client's latency for `seq`, in µs, sorted.
    pub async fn latencies(&mut self, seq: u64) -> Vec<u64> {
        let answers = self.ask(&format!("lat {seq}")).await;
        let mut all: Vec<u64> = answers
            .iter()
            .flat_map(|a| a["lat_us"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_u64())
            .collect();
        all.sort_unstable();
        all
    }
}
