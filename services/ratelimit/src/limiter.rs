//! The storage-neutral contract: one atomic decision per call, the same semantics on
//! every backend (checked by one contract suite in `tests/`).
//!
//! - Requests per minute: GCRA (a sliding window without per-request state): a burst of
//!   `limit` is admitted, then one request every `60 s / limit`. No 2× burst at a boundary.
//! - Concurrent streams: leases that expire `lease_ttl` after the last renewal.
//! - Daily tokens (UTC day): `Acquire` reserves an estimate; `Release` removes the
//!   reservation and charges what was really used. Reservations never released expire
//!   after `reservation_ttl` (renewing a stream lease also renews its reservation).
//! - Request classes (reads, writes, session minting): one GCRA budget per class and
//!   subject, `limit` at once and then refilled evenly over `period`; nothing to release.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;

/// The limits every backend enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: u32,
    pub max_streams: u32,
    pub daily_tokens: u64,
    /// How long a stream lease lives without renewal.
    pub lease_ttl: Duration,
    /// How long an unreleased token reservation lives without renewal.
    pub reservation_ttl: Duration,
    /// Per-class request budgets (every public RPC; anonymous session minting).
    pub reads: Budget,
    pub writes: Budget,
    pub sessions: Budget,
}

/// `limit` requests at once, then one every `period / limit` (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u32,
    pub period: Duration,
}

impl Budget {
    pub const fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(60),
        }
    }

    /// GCRA emission interval in microseconds (at least 1).
    pub(crate) fn emission_us(&self) -> i64 {
        let period_us = i64::try_from(self.period.as_micros()).unwrap_or(i64::MAX / 2);
        (period_us / i64::from(self.limit.max(1))).max(1)
    }
}

/// Which budget a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestClass {
    Read,
    Write,
    Session,
}

impl RequestClass {
    pub const ALL: [Self; 3] = [Self::Read, Self::Write, Self::Session];

    /// The `limit` label of its decisions.
    pub fn metric_limit(self) -> &'static str {
        match self {
            Self::Read => "read_requests",
            Self::Write => "write_requests",
            Self::Session => "session_mints",
        }
    }

    /// Redis key suffix.
    pub fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Session => "session",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Read => 0,
            Self::Write => 1,
            Self::Session => 2,
        }
    }
}

/// The answer to one `admit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub allowed: bool,
    /// When denied: milliseconds until a retry can succeed (0 when allowed).
    pub retry_after_ms: i64,
    /// Requests of the class still admissible after this decision.
    pub remaining: u32,
    pub now_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_minute: 20,
            max_streams: 3,
            daily_tokens: 100_000,
            lease_ttl: Duration::from_secs(30),
            reservation_ttl: Duration::from_secs(600),
            reads: Budget::per_minute(600),
            writes: Budget::per_minute(120),
            // A browser mints once and then renews; a NAT of households still fits.
            sessions: Budget {
                limit: 60,
                period: Duration::from_secs(3600),
            },
        }
    }
}

impl Limits {
    /// GCRA emission interval in microseconds.
    pub(crate) fn emission_us(&self) -> i64 {
        (MINUTE_MS * 1000) / i64::from(self.requests_per_minute.max(1))
    }
    pub fn budget(&self, class: RequestClass) -> Budget {
        match class {
            RequestClass::Read => self.reads,
            RequestClass::Write => self.writes,
            RequestClass::Session => self.sessions,
        }
    }
    pub(crate) fn lease_ttl_ms(&self) -> i64 {
        self.lease_ttl.as_millis() as i64
    }
    pub(crate) fn reservation_ttl_ms(&self) -> i64 {
        self.reservation_ttl.as_millis() as i64
    }
    /// How long a released reservation id is remembered (so a retried Release does not charge twice).
    pub(crate) fn released_retention_ms(&self) -> i64 {
        self.reservation_ttl_ms() + MINUTE_MS
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    RequestsPerMinute,
    ConcurrentStreams,
    DailyTokens,
}

impl Limit {
    pub(crate) fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::RequestsPerMinute),
            2 => Some(Self::ConcurrentStreams),
            3 => Some(Self::DailyTokens),
            _ => None,
        }
    }
    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "requests_per_minute",
            Self::ConcurrentStreams => "concurrent_streams",
            Self::DailyTokens => "daily_tokens",
        }
    }
}

/// One subject's usage as seen by the backend at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub requests_remaining: u32,
    /// Unix ms when another request becomes available (`now_ms` if some remain).
    pub requests_reset_at_ms: i64,
    pub streams_in_use: u32,
    /// Tokens charged today (real usage of released requests).
    pub tokens_used: u64,
    /// Tokens reserved by requests in flight.
    pub tokens_reserved: u64,
    /// The backend's clock when the decision was made.
    pub now_ms: i64,
}

impl Usage {
    /// What a subject with no history has.
    pub fn fresh(limits: &Limits, now_ms: i64) -> Self {
        Self {
            requests_remaining: limits.requests_per_minute,
            requests_reset_at_ms: now_ms,
            now_ms,
            ..Self::default()
        }
    }

    pub fn tokens_remaining(&self, limits: &Limits) -> u64 {
        limits
            .daily_tokens
            .saturating_sub(self.tokens_used)
            .saturating_sub(self.tokens_reserved)
    }

    /// Unix ms of the next UTC midnight.
    pub fn tokens_reset_at_ms(&self) -> i64 {
        (self.now_ms.div_euclid(DAY_MS) + 1) * DAY_MS
    }
}

/// What `Acquire` asks for.
#[derive(Debug, Clone)]
pub struct AcquireParams {
    /// Reservation id; also the lease id when `open_stream`.
    pub id: String,
    pub estimated_tokens: u64,
    pub open_stream: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `None` when allowed.
    pub denied_by: Option<Limit>,
    /// When denied: milliseconds until a retry can succeed.
    pub retry_after_ms: i64,
    /// Usage after the decision (including what it consumed).
    pub usage: Usage,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.denied_by.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("backend unreachable (failed recently; retried in the background)")]
    Down,
    #[error("unexpected reply from the rate-limit script: {0}")]
    Protocol(String),
}

/// A store that makes quota decisions atomically for one subject.
#[async_trait::async_trait]
pub trait Limiter: Send + Sync + 'static {
    fn limits(&self) -> &Limits;
    /// Admits one request (requests/minute), takes a lease if asked and reserves the
    /// estimate — all or nothing.
    async fn acquire(
        &self,
        subject: &str,
        params: &AcquireParams,
    ) -> Result<Decision, BackendError>;
    /// Drops the lease (if any) and reconciles the reservation with `actual_tokens`.
    /// Releasing the same reservation twice charges once.
    async fn release(
        &self,
        subject: &str,
        reservation_id: &str,
        lease_id: &str,
        actual_tokens: u64,
    ) -> Result<Usage, BackendError>;
    /// Extends a live lease (and its reservation); false when it has expired or is unknown.
    async fn renew(&self, subject: &str, lease_id: &str) -> Result<bool, BackendError>;
    async fn usage(&self, subject: &str) -> Result<Usage, BackendError>;
    /// Admits one request of `class` against the subject's budget for it, or says when
    /// one would be admitted.
    async fn admit(&self, subject: &str, class: RequestClass) -> Result<Admission, BackendError>;
    /// Whether the backend is reachable.
    async fn ping(&self) -> Result<(), BackendError>;
}

/// Time source of the in-process limiter, in Unix microseconds.
pub trait Clock: Send + Sync + 'static {
    fn now_us(&self) -> i64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or_default()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at_unix_ms(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms * 1000)))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// An offset added to Redis `TIME` by the script, so tests can move a Redis-backed
/// limiter through minutes and days without sleeping. Zero in production.
#[derive(Debug, Clone, Default)]
pub struct TimeShift(Arc<AtomicI64>);

impl TimeShift {
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
    pub fn offset_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One GCRA step on a theoretical arrival time (µs): the new TAT when admitted, and
/// the answer. Shared by the in-process limiter; the Lua script mirrors it.
pub(crate) fn gcra(tat_us: i64, now_us: i64, budget: Budget) -> (Option<i64>, Admission) {
    let t = budget.emission_us();
    let limit = i64::from(budget.limit.max(1));
    let burst = t.saturating_mul(limit);
    let now_ms = now_us.div_euclid(1000);
    let new_tat = tat_us.max(now_us).saturating_add(t);
    let remaining = |tat: i64| ((now_us + burst - tat) / t).clamp(0, limit) as u32;
    if new_tat - now_us > burst {
        let retry = ceil_div(new_tat - burst - now_us, 1000).max(1);
        return (
            None,
            Admission {
                allowed: false,
                retry_after_ms: retry,
                remaining: remaining(tat_us.max(now_us)),
                now_ms,
            },
        );
    }
    (
        Some(new_tat),
        Admission {
            allowed: true,
            retry_after_ms: 0,
            remaining: remaining(new_tat),
            now_ms,
        },
    )
}

/// Ceil division for positive durations in ms → µs conversions.
pub(crate) fn ceil_div(a: i64, b: i64) -> i64 {
    if a <= 0 { 0 } else { (a + b - 1) / b }
}
