//! The service's Prometheus counters (names from `confab_telemetry::metrics_names`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use confab_telemetry::metrics_names::{RATELIMIT_BACKEND_ERRORS_TOTAL, RATELIMIT_DECISIONS_TOTAL};

type Labels = Vec<(&'static str, &'static str)>;

/// Counters; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    decisions: Family<Labels, Counter>,
    backend_errors: Family<Labels, Counter>,
}

static GLOBAL: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);

impl Metrics {
    /// The process-wide counters every `RateLimiter` counts into by default (the
    /// embedding gateway adds them to its registry with [`Metrics::register`]).
    pub fn global() -> Metrics {
        GLOBAL.clone()
    }

    pub fn decision(&self, allowed: bool, limit: &'static str) {
        let result = if allowed { "allowed" } else { "denied" };
        self.decisions
            .get_or_create(&vec![("result", result), ("limit", limit)])
            .inc();
    }

    pub fn backend_error(&self, policy: &'static str) {
        self.backend_errors
            .get_or_create(&vec![("policy", policy)])
            .inc();
    }

    pub fn backend_errors(&self, policy: &'static str) -> u64 {
        self.backend_errors
            .get_or_create(&vec![("policy", policy)])
            .get()
    }

    /// Adds the counters to `registry` (the gateway's or the service's /metrics).
    pub fn register(&self, registry: &mut Registry) {
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            RATELIMIT_DECISIONS_TOTAL.trim_end_matches("_total"),
            "Rate-limit decisions",
            self.decisions.clone(),
        );
        registry.register(
            RATELIMIT_BACKEND_ERRORS_TOTAL.trim_end_matches("_total"),
            "Rate-limit decisions made without the backend (unreachable)",
            self.backend_errors.clone(),
        );
    }

    /// Prometheus text of these counters alone.
    pub fn encode(&self) -> String {
        confab_telemetry::encode_metrics(|r| self.register(r))
    }
}
