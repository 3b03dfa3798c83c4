//! What Redis spent: its CPU from /proc and its commands from `INFO commandstats` (redis-cli).
//! Per change it does little, so a change's cost is measured over a window around it and the
//! background (lease renewals, measured while idle) is subtracted by the report.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sse_loadgen::procfs::{cpu_ms, on_cpu_ms};

#[derive(Clone, Copy)]
pub struct Redis {
    pub pid: u32,
    pub port: u16,
}

/// Calls per command, and Redis's CPU time in ms, at one moment.
#[derive(Clone, Default)]
pub struct Sample {
    pub calls: BTreeMap<String, u64>,
    /// User + system, from /proc/<pid>/stat (10 ms ticks).
    pub cpu_ms: f64,
    /// On-CPU time from schedstat (ns).
    pub on_cpu_ms: f64,
}

impl Redis {
    pub async fn sample(&self) -> Sample {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["INFO", "commandstats"])
            .output()
            .await;
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        Sample {
            calls: parse_commandstats(&text),
            cpu_ms: cpu_ms(&self.pid.to_string()),
            on_cpu_ms: on_cpu_ms(self.pid),
        }
    }
}

/// `cmdstat_evalsha:calls=12,usec=...` lines, without the `INFO` this bench sends itself.
fn parse_commandstats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .filter(|(name, _)| name != "info")
        .collect()
}

impl Sample {
    /// What happened between `before` and `self`, added to `self`'s running total `into`.
    pub fn add_since(&self, before: &Sample, into: &mut Sample) {
        for (k, v) in &self.calls {
            *into.calls.entry(k.clone()).or_default() +=
                v - before.calls.get(k).copied().unwrap_or(0);
        }
        into.cpu_ms += self.cpu_ms - before.cpu_ms;
        into.on_cpu_ms += self.on_cpu_ms - before.on_cpu_ms;
    }

    /// Commands and CPU between `before` and `self`, per `per` (changes, or seconds).
    pub fn since(&self, before: &Sample, per: f64) -> Value {
        let mut d = Sample::default();
        self.add_since(before, &mut d);
        d.per(per)
    }

    /// This total, per `per`.
    pub fn per(&self, per: f64) -> Value {
        let per = per.max(f64::MIN_POSITIVE);
        let calls: BTreeMap<&String, f64> = self
            .calls
            .iter()
            .map(|(k, v)| (k, *v as f64 / per))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        json!({
            "commands": calls.values().sum::<f64>(),
            "by_command": calls,
            "cpu_ms": self.cpu_ms / per,
            "on_cpu_ms": self.on_cpu_ms / per,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_lines_become_calls_per_command() {
        let text = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=340,usec_per_call=28.33,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=3,usec=9\r\ncmdstat_publish:calls=4,usec=8\r\n";
        let calls = parse_commandstats(text);
        assert_eq!(calls.get("evalsha"), Some(&12));
        assert_eq!(calls.get("publish"), Some(&4));
        assert_eq!(calls.get("info"), None);
    }
}
