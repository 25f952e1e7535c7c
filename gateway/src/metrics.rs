//! The gateway's Prometheus metrics; names come from `confab_telemetry::metrics_names`.
//! /metrics also carries the process-wide metrics of the chat service (time to first
//! token, model tokens) and of the rate limiter, which record into them when they run
//! in this process (and stay empty when they are remote: those expose their own).

use confab_telemetry::metrics_names as names;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCode {
    pub service: String,
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Rpc {
    pub service: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub path: String,
    pub status: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub rpc_requests: Family<RpcCode, Counter>,
    pub rpc_duration: Family<Rpc, Histogram, fn() -> Histogram>,
    pub open_streams: Family<ServiceLabel, Gauge>,
    pub http_requests: Family<HttpLabels, Counter>,
}

/// prometheus-client appends `_total` to counters itself.
fn counter_name(full: &str) -> &str {
    full.strip_suffix("_total").unwrap_or(full)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let rpc_requests = Family::<RpcCode, Counter>::default();
        let rpc_duration =
            Family::<Rpc, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let open_streams = Family::<ServiceLabel, Gauge>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            counter_name(names::RPC_REQUESTS_TOTAL),
            "Finished RPCs at the gateway",
            rpc_requests.clone(),
        );
        registry.register(
            names::RPC_DURATION_SECONDS,
            "RPC latency to the end of the response or stream",
            rpc_duration.clone(),
        );
        registry.register(
            names::OPEN_STREAMS,
            "Server streams open now",
            open_streams.clone(),
        );
        registry.register(
            counter_name(names::HTTP_REQUESTS_TOTAL),
            "Plain HTTP requests at the gateway",
            http_requests.clone(),
        );
        confab_chat::metrics::Metrics::global().register(&mut registry);
        confab_ratelimit::metrics::Metrics::global().register(&mut registry);
        Self {
            registry,
            rpc_requests,
            rpc_duration,
            open_streams,
            http_requests,
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn http(&self, path: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                path: path.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_shared_names() {
        let m = Metrics::new();
        m.http("/health", 200);
        m.rpc_requests
            .get_or_create(&RpcCode {
                service: "s".into(),
                method: "m".into(),
                code: "OK".into(),
            })
            .inc();
        m.rpc_duration
            .get_or_create(&Rpc {
                service: "s".into(),
                method: "m".into(),
            })
            .observe(0.01);
        m.open_streams
            .get_or_create(&ServiceLabel {
                service: "s".into(),
            })
            .inc();
        confab_chat::metrics::Metrics::global().time_to_first_token("x", 0.2);
        confab_chat::metrics::Metrics::global().tokens("x", 3, 4);
        confab_ratelimit::metrics::Metrics::global().decision(true, "rate");
        confab_ratelimit::metrics::Metrics::global().backend_error("open");
        let text = m.render();
        for name in [
            names::RPC_REQUESTS_TOTAL,
            names::RPC_DURATION_SECONDS,
            names::OPEN_STREAMS,
            names::TIME_TO_FIRST_TOKEN_SECONDS,
            names::HTTP_REQUESTS_TOTAL,
            names::MODEL_TOKENS_TOTAL,
            names::RATELIMIT_DECISIONS_TOTAL,
            names::RATELIMIT_BACKEND_ERRORS_TOTAL,
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing in:\n{text}"
            );
        }
        assert_each_family_once(&text);
    }

    /// Every metric family is declared exactly once (`# TYPE <name> ...`).
    fn assert_each_family_once(text: &str) {
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split_whitespace().next().unwrap_or_default();
                assert!(seen.insert(name.to_owned()), "{name} twice in:\n{text}");
            }
        }
    }
}
