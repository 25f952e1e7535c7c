//! The chat service's Prometheus metrics (names from `confab_telemetry::metrics_names`):
//! time to first token and model tokens, per model. Process-wide, like the rate
//! limiter's: the embedding gateway adds them to its registry with
//! `confab_chat::metrics::Metrics::global().register(&mut registry)`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use confab_telemetry::metrics_names::{MODEL_TOKENS_TOTAL, TIME_TO_FIRST_TOKEN_SECONDS};

type Labels = Vec<(&'static str, String)>;

fn ttft_histogram() -> Histogram {
    // 5 ms .. ~80 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    time_to_first_token: Family<Labels, Histogram, fn() -> Histogram>,
    tokens: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            time_to_first_token: Family::new_with_constructor(ttft_histogram),
            tokens: Family::default(),
        }
    }
}

static GLOBAL: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);

impl Metrics {
    /// The process-wide metrics every chat service in this process records into.
    pub fn global() -> Metrics {
        GLOBAL.clone()
    }

    /// Seconds from the request to the first token of the answer.
    pub fn time_to_first_token(&self, model: &str, seconds: f64) {
        self.time_to_first_token
            .get_or_create(&vec![("model", model.to_owned())])
            .observe(seconds);
    }

    /// Tokens a model call used (answers and titles).
    pub fn tokens(&self, model: &str, prompt: u32, completion: u32) {
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            if n > 0 {
                self.tokens
                    .get_or_create(&vec![
                        ("model", model.to_owned()),
                        ("kind", kind.to_owned()),
                    ])
                    .inc_by(u64::from(n));
            }
        }
    }

    /// Tokens counted so far for `model` and `kind` (`prompt` | `completion`).
    pub fn tokens_of(&self, model: &str, kind: &str) -> u64 {
        self.tokens
            .get_or_create(&vec![
                ("model", model.to_owned()),
                ("kind", kind.to_owned()),
            ])
            .get()
    }

    /// Adds the metrics to `registry` (the gateway's or the service's /metrics).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            TIME_TO_FIRST_TOKEN_SECONDS,
            "Time from the chat request to the first answer token",
            self.time_to_first_token.clone(),
        );
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            MODEL_TOKENS_TOTAL.trim_end_matches("_total"),
            "Model tokens used, by kind (prompt | completion)",
            self.tokens.clone(),
        );
    }

    /// Prometheus text of these metrics alone.
    pub fn encode(&self) -> String {
        confab_telemetry::encode_metrics(|r| self.register(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_fixed_names() {
        let m = Metrics::default();
        m.time_to_first_token("gpt-4o", 0.2);
        m.tokens("gpt-4o", 12, 3);
        let text = m.encode();
        assert!(
            text.contains("confab_time_to_first_token_seconds_count{model=\"gpt-4o\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("confab_model_tokens_total{model=\"gpt-4o\",kind=\"prompt\"} 12"),
            "{text}"
        );
        assert!(
            text.contains("confab_model_tokens_total{model=\"gpt-4o\",kind=\"completion\"} 3"),
            "{text}"
        );
    }
}
