//! The domain service: validates input, asks the limiter, applies the failure policy
//! when the backend is unreachable, counts decisions. Never sees `tonic::Request`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use confab_common::{ErrorCode, ServiceError};

use crate::limiter::{
    AcquireParams, Admission, BackendError, Decision, Limit, Limiter, Limits, RequestClass, Usage,
};
use crate::metrics::Metrics;

/// What to do when the backend (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailPolicy {
    /// Allow, marked `degraded`, logged and counted.
    #[default]
    Open,
    /// Refuse with UNAVAILABLE.
    Closed,
}

impl FailPolicy {
    pub fn label(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

impl std::str::FromStr for FailPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            _ => Err(format!("expected open or closed, got {s:?}")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error(
        "invalid subject {0:?}: expected user:<id> or ip:<addr>, at most 160 characters of [A-Za-z0-9._:@/-]"
    )]
    InvalidSubject(String),
    #[error("invalid {field}: at most 64 characters of [A-Za-z0-9_-]")]
    InvalidId { field: &'static str },
    #[error(
        "the rate-limit store (Redis) is unreachable and RATE_LIMIT_FAIL_POLICY=closed refuses requests until it is back; retry shortly"
    )]
    BackendUnavailable(#[source] BackendError),
}

impl ServiceError for RateLimitError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidSubject(_) | Self::InvalidId { .. } => ErrorCode::InvalidArgument,
            Self::BackendUnavailable(_) => ErrorCode::Unavailable,
        }
    }
}

confab_common::impl_status_from!(RateLimitError);

pub const MAX_SUBJECT_LEN: usize = 160;

/// `user:<id>` or `ip:<addr>` (`ip:<net>/64` for IPv6); bounded, and never containing
/// `{`/`}` (the hash tag).
pub fn validate_subject(subject: &str) -> Result<(), RateLimitError> {
    let rest = subject
        .strip_prefix("user:")
        .or_else(|| subject.strip_prefix("ip:"));
    let ok = subject.len() <= MAX_SUBJECT_LEN
        && rest.is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:_@-/".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        let shown: String = subject.chars().take(40).collect();
        Err(RateLimitError::InvalidSubject(shown))
    }
}

/// Reservation / lease ids; empty means "none".
pub fn validate_id(field: &'static str, id: &str) -> Result<(), RateLimitError> {
    if id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(RateLimitError::InvalidId { field })
    }
}

#[derive(Debug, Clone)]
pub struct AcquireOutcome {
    pub decision: Decision,
    pub reservation_id: String,
    pub lease_id: String,
    pub degraded: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct UsageOutcome {
    pub usage: Usage,
    pub degraded: bool,
}

/// The rate-limit domain service.
pub struct RateLimiter {
    limiter: Arc<dyn Limiter>,
    policy: FailPolicy,
    metrics: Metrics,
    backend_ok: AtomicBool,
    /// Unix ms of the last call let through to a backend known to be down.
    last_probe_ms: AtomicI64,
}

/// While the backend is down, one call per this interval still tries it (half-open);
/// the others are decided at once by the policy instead of waiting for a timeout.
const PROBE_INTERVAL_MS: i64 = 500;

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl RateLimiter {
    pub fn new(limiter: Arc<dyn Limiter>, policy: FailPolicy) -> Self {
        Self {
            limiter,
            policy,
            metrics: Metrics::global(),
            backend_ok: AtomicBool::new(true),
            last_probe_ms: AtomicI64::new(0),
        }
    }

    /// Counts into `metrics` instead of the process-wide counters (tests).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn limits(&self) -> &Limits {
        self.limiter.limits()
    }
    pub fn policy(&self) -> FailPolicy {
        self.policy
    }
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    /// False after a failed backend call, until a call or a ping succeeds.
    pub fn backend_ok(&self) -> bool {
        self.backend_ok.load(Ordering::Relaxed)
    }

    /// Pings the backend and records the result (the health monitor calls this).
    pub async fn probe_backend(&self) -> bool {
        let ok = self.limiter.ping().await.is_ok();
        self.backend_ok.store(ok, Ordering::Relaxed);
        ok
    }

    /// Calls the backend unless it is known to be down and another call probed it
    /// less than `PROBE_INTERVAL_MS` ago.
    async fn call<'a, T>(
        &'a self,
        f: impl std::future::Future<Output = Result<T, BackendError>> + 'a,
    ) -> Result<T, BackendError> {
        if !self.backend_ok() {
            let now = unix_ms();
            let last = self.last_probe_ms.load(Ordering::Relaxed);
            if now - last < PROBE_INTERVAL_MS
                || self
                    .last_probe_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return Err(BackendError::Down);
            }
        }
        f.await
    }

    /// Ok(None): the backend failed and the policy is open.
    fn on_backend<T>(
        &self,
        what: &str,
        result: Result<T, BackendError>,
    ) -> Result<Option<T>, RateLimitError> {
        match result {
            Ok(v) => {
                self.backend_ok.store(true, Ordering::Relaxed);
                Ok(Some(v))
            }
            Err(e) => {
                self.backend_ok.store(false, Ordering::Relaxed);
                self.metrics.backend_error(self.policy.label());
                match self.policy {
                    FailPolicy::Open => {
                        tracing::warn!(error = %e, op = what, "rate-limit backend unreachable; failing open (allowed, degraded)");
                        Ok(None)
                    }
                    FailPolicy::Closed => Err(RateLimitError::BackendUnavailable(e)),
                }
            }
        }
    }

    fn degraded_usage(&self) -> Usage {
        Usage::fresh(self.limits(), unix_ms())
    }

    #[tracing::instrument(skip(self), fields(allowed))]
    pub async fn acquire(
        &self,
        subject: &str,
        estimated_tokens: u64,
        open_stream: bool,
        request_id: &str,
    ) -> Result<AcquireOutcome, RateLimitError> {
        validate_subject(subject)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let params = AcquireParams {
            id: id.clone(),
            estimated_tokens,
            open_stream,
        };
        let result = self.call(self.limiter.acquire(subject, &params)).await;
        let (decision, degraded) = match self.on_backend("acquire", result)? {
            Some(d) => (d, false),
            None => (
                Decision {
                    denied_by: None,
                    retry_after_ms: 0,
                    usage: self.degraded_usage(),
                },
                true,
            ),
        };
        let allowed = decision.allowed();
        tracing::Span::current().record("allowed", allowed);
        self.metrics
            .decision(allowed, decision.denied_by.map_or("none", Limit::label));
        Ok(AcquireOutcome {
            reservation_id: if allowed { id.clone() } else { String::new() },
            lease_id: if allowed && open_stream {
                id
            } else {
                String::new()
            },
            decision,
            degraded,
        })
    }

    #[tracing::instrument(skip(self))]
    pub async fn release(
        &self,
        subject: &str,
        reservation_id: &str,
        lease_id: &str,
        actual_tokens: u64,
    ) -> Result<UsageOutcome, RateLimitError> {
        validate_subject(subject)?;
        validate_id("reservation_id", reservation_id)?;
        validate_id("lease_id", lease_id)?;
        let result = self
            .call(
                self.limiter
                    .release(subject, reservation_id, lease_id, actual_tokens),
            )
            .await;
        Ok(match self.on_backend("release", result)? {
            Some(usage) => UsageOutcome {
                usage,
                degraded: false,
            },
            None => UsageOutcome {
                usage: self.degraded_usage(),
                degraded: true,
            },
        })
    }

    /// One request of `class` against the subject's budget for it. Fail-open: admitted,
    /// `degraded`.
    #[tracing::instrument(skip(self), fields(allowed))]
    pub async fn admit(
        &self,
        subject: &str,
        class: RequestClass,
    ) -> Result<(Admission, bool), RateLimitError> {
        validate_subject(subject)?;
        let result = self.call(self.limiter.admit(subject, class)).await;
        let (admission, degraded) = match self.on_backend("admit", result)? {
            Some(a) => (a, false),
            None => (
                Admission {
                    allowed: true,
                    retry_after_ms: 0,
                    remaining: self.limits().budget(class).limit,
                    now_ms: unix_ms(),
                },
                true,
            ),
        };
        tracing::Span::current().record("allowed", admission.allowed);
        self.metrics
            .decision(admission.allowed, class.metric_limit());
        Ok((admission, degraded))
    }

    /// Ok(true) when the lease was extended (fail-open: assumed extended).
    #[tracing::instrument(skip(self))]
    pub async fn renew(&self, subject: &str, lease_id: &str) -> Result<bool, RateLimitError> {
        validate_subject(subject)?;
        validate_id("lease_id", lease_id)?;
        if lease_id.is_empty() {
            return Err(RateLimitError::InvalidId { field: "lease_id" });
        }
        let result = self.call(self.limiter.renew(subject, lease_id)).await;
        Ok(self.on_backend("renew", result)?.unwrap_or(true))
    }

    pub async fn usage(&self, subject: &str) -> Result<UsageOutcome, RateLimitError> {
        validate_subject(subject)?;
        let result = self.call(self.limiter.usage(subject)).await;
        Ok(match self.on_backend("quota", result)? {
            Some(usage) => UsageOutcome {
                usage,
                degraded: false,
            },
            None => UsageOutcome {
                usage: self.degraded_usage(),
                degraded: true,
            },
        })
    }
}
