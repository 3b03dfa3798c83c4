//! The per-stream gauges, read from the hub when Prometheus collects: nothing counts clients or
//! instances for them as they come and go, and concurrent scrapes never reset each other's.

use std::sync::Weak;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts};

use super::Hub;

/// Registered once, in the gateway's one registry.
pub(crate) struct Gauges {
    /// Weak: the registry lives in the `Metrics` that the hub itself holds, so a strong handle
    /// would keep the hub, and its poller runtime, alive forever.
    hub: Weak<dyn Hub>,
    descs: Vec<Desc>,
}

/// One scrape's gauges, built afresh so no other scrape can touch them.
struct Reading {
    clients: IntGaugeVec,
    instances: IntGaugeVec,
    pollers: IntGauge,
}

impl Reading {
    fn new() -> Result<Reading, prometheus::Error> {
        Ok(Reading {
            clients: IntGaugeVec::new(
                Opts::new("clients", "SSE clients attached, per stream"),
                &["stream"],
            )?,
            instances: IntGaugeVec::new(
                Opts::new("stream_instances", "Stream instances, per stream"),
                &["stream"],
            )?,
            pollers: IntGauge::new("pollers", "Pollers running")?,
        })
    }

    fn families(&self) -> Vec<MetricFamily> {
        [
            self.clients.collect(),
            self.instances.collect(),
            self.pollers.collect(),
        ]
        .concat()
    }
}

impl Gauges {
    pub(crate) fn new(hub: Weak<dyn Hub>) -> Result<Gauges, prometheus::Error> {
        let r = Reading::new()?;
        let descs = [r.clients.desc(), r.instances.desc(), r.pollers.desc()]
            .concat()
            .into_iter()
            .cloned()
            .collect();
        Ok(Gauges { hub, descs })
    }
}

impl Collector for Gauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // `Reading::new` already succeeded once, in `Gauges::new`, with the same names.
        let (Some(hub), Ok(r)) = (self.hub.upgrade(), Reading::new()) else {
            return Vec::new();
        };
        let instances = hub.instances();
        for i in &instances {
            let stream = [i.stream.as_str()];
            r.clients
                .with_label_values(&stream)
                .add(i64::try_from(i.clients).unwrap_or(i64::MAX));
            r.instances.with_label_values(&stream).inc();
        }
        r.pollers
            .set(i64::try_from(instances.len()).unwrap_or(i64::MAX));
        r.families()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::StreamSpec;
    use crate::hub::{HubError, InstanceInfo, Refreshed, SubscribeRequest, Subscription};
    use crate::metrics::Metrics;

    /// A hub that only answers `instances`.
    struct Running(Mutex<Vec<InstanceInfo>>);

    #[async_trait::async_trait]
    impl Hub for Running {
        async fn subscribe(&self, _: SubscribeRequest) -> Result<Subscription, HubError> {
            Err(HubError::Denied(404))
        }
        fn reconcile(&self, _: &[Arc<StreamSpec>]) {}
        fn instances(&self) -> Vec<InstanceInfo> {
            self.0.lock().unwrap().clone()
        }
        fn tail(&self, _: &str) -> Option<Subscription> {
            None
        }
        fn refresh(&self, _: &str, _: &str) -> Refreshed {
            Refreshed::default()
        }
        fn cluster_state(&self) -> Option<String> {
            None
        }
        async fn shut_down(&self) {}
    }

    fn instance(stream: &str, clients: usize) -> InstanceInfo {
        InstanceInfo {
            stream: stream.into(),
            instance: format!("{stream}/{clients}"),
            clients,
            event_id: None,
            last_poll: None,
            last_result: None,
            upstream_healthy: true,
            cluster: None,
            bytes: Default::default(),
        }
    }

    fn gauges(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| {
                [
                    "sse_gateway_clients{",
                    "sse_gateway_stream_instances",
                    "sse_gateway_pollers",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .collect()
    }

    #[test]
    fn the_gauges_are_what_runs_at_each_scrape() {
        let running = Arc::new(Running(Mutex::new(vec![
            instance("/a", 2),
            instance("/a", 3),
            instance("/b", 0),
        ])));
        let metrics = Metrics::new().unwrap();
        let hub: Arc<dyn Hub> = running.clone();
        metrics
            .register(Gauges::new(Arc::downgrade(&hub)).unwrap())
            .unwrap();
        assert_eq!(
            gauges(&metrics.render()),
            [
                "sse_gateway_clients{stream=\"/a\"} 5",
                "sse_gateway_clients{stream=\"/b\"} 0",
                "sse_gateway_pollers 3",
                "sse_gateway_stream_instances{stream=\"/a\"} 2",
                "sse_gateway_stream_instances{stream=\"/b\"} 1",
            ]
        );
        // A stream whose instances all stopped leaves no gauge behind.
        *running.0.lock().unwrap() = vec![instance("/b", 1)];
        let text = metrics.render();
        assert_eq!(
            gauges(&text),
            [
                "sse_gateway_clients{stream=\"/b\"} 1",
                "sse_gateway_pollers 1",
                "sse_gateway_stream_instances{stream=\"/b\"} 1",
            ]
        );
        assert!(text.contains("# HELP sse_gateway_clients SSE clients attached, per stream"));
        // Once the hub is gone, a scrape still answers, without them.
        drop((hub, running));
        let text = metrics.render();
        assert!(gauges(&text).is_empty(), "{text}");
        assert!(text.contains("sse_gateway_polls_total"));
    }
}
