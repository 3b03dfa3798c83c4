//! The gateways under test, seen from their admin listeners: who holds a lease, their cluster
//! metrics, and `POST /streams/refresh`.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

/// `pid,port,admin_port`, as bench/cluster.sh passes each gateway.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub pid: u32,
    pub port: u16,
    pub admin: u16,
}

impl FromStr for Gateway {
    type Err = String;
    fn from_str(s: &str) -> Result<Gateway, String> {
        let f: Vec<&str> = s.split(',').collect();
        let bad = || format!("`{s}`: give a gateway as pid,port,admin_port");
        let [pid, port, admin] = f.as_slice() else {
            return Err(bad());
        };
        Ok(Gateway {
            pid: pid.parse().map_err(|_| bad())?,
            port: port.parse().map_err(|_| bad())?,
            admin: admin.parse().map_err(|_| bad())?,
        })
    }
}

/// What one gateway's `/streams` says of the cluster: the role of its first instance that has
/// one, and the holder it names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Role {
    pub role: Option<String>,
    pub holder: Option<String>,
}

pub struct Admin {
    http: reqwest::Client,
}

impl Admin {
    pub fn new() -> Admin {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Admin { http }
    }

    async fn get(&self, g: &Gateway, path: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:{}{path}", g.admin);
        self.http.get(url).send().await.ok()?.text().await.ok()
    }

    /// The cluster role `g` reports; empty when it is down or reports none (no `cluster:`).
    pub async fn role(&self, g: &Gateway) -> Role {
        let Some(text) = self.get(g, "/streams").await else {
            return Role::default();
        };
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| find_role(&v))
            .unwrap_or_default()
    }

    /// The sum of a metric's samples (every label set) on `g`, if it exports it.
    pub async fn metric(&self, g: &Gateway, name: &str) -> Option<f64> {
        let text = self.get(g, "/metrics").await?;
        let samples: Vec<f64> = text
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!samples.is_empty()).then(|| samples.iter().sum())
    }

    /// `POST /streams/refresh?path=`: the holder (any gateway, in a cluster) polls now.
    pub async fn refresh(&self, g: &Gateway, path: &str) {
        let url = format!("http://127.0.0.1:{}/streams/refresh?path={path}", g.admin);
        let _ = self.http.post(url).send().await;
    }
}

/// The first `"cluster": {"role": ..}` object anywhere in `/streams`.
fn find_role(v: &Value) -> Option<Role> {
    match v {
        Value::Object(m) => {
            if let Some(c) = m.get("cluster").filter(|c| c.get("role").is_some()) {
                let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
                return Some(Role {
                    role: text("role"),
                    holder: text("holder"),
                });
            }
            m.values().find_map(find_role)
        }
        Value::Array(a) => a.iter().find_map(find_role),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_role_is_found_in_any_instance() {
        let streams = json!({ "instances": [
            { "path": "/sse/a", "clients": 3 },
            { "path": "/sse/doc", "cluster": { "role": "holder", "holder": "g2" } },
        ]});
        let role = find_role(&streams).unwrap();
        assert_eq!(role.role.as_deref(), Some("holder"));
        assert_eq!(role.holder.as_deref(), Some("g2"));
        assert_eq!(find_role(&json!({ "instances": [] })), None);
    }
}
