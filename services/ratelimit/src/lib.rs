//! One atomic quota decision per request: requests/minute, concurrent streams and a daily token budget, in-process or on Redis.
//!
//! Map: [`limiter`] (the contract and its types), [`memory`] (in-process backend),
//! [`redis_store`] (Redis backend: one Lua script per decision), [`service`] (domain:
//! validation, failure policy, metrics), this file (config and the thin gRPC adapter).
//!
//! Health while Redis is unreachable: the overall server ("") stays SERVING (the process
//! is fine; restarting it would not help); [`BACKEND_HEALTH_NAME`] goes NOT_SERVING under
//! either policy (the "degraded" signal); the service name itself stays SERVING with the
//! open policy (it still answers, `degraded=true`) and goes NOT_SERVING with the closed one.
//!
//! How a caller (chat) uses it, per model call:
//! 1. `Acquire{subject, estimated_tokens: prompt + max answer tokens, open_stream: true}`.
//!    `allowed=false` is a normal answer, not an error: turn it into RESOURCE_EXHAUSTED
//!    with `message` and `retry_after_seconds`. UNAVAILABLE only comes with the closed policy.
//! 2. While streaming, `RenewLease{lease_id}` every `lease_ttl_seconds / 3`; renewing also
//!    keeps the token reservation alive. `renewed=false` means the lease already expired.
//! 3. Always `Release{reservation_id, lease_id, actual_tokens}` when the call ends — with the
//!    real usage, or 0 when it failed before the model answered. Releasing twice charges once.
//!
//! Unreleased leases expire after `RATE_LIMIT_LEASE_TTL_SECS` (30), reservations after 10 min.
//! Redis Cluster: keys of a subject share the `{subject}` hash tag; the client here is a
//! single-endpoint `ConnectionManager` (ElastiCache primary endpoint / cluster mode off).
#![forbid(unsafe_code)]

pub mod limiter;
pub mod memory;
pub mod metrics;
pub mod redis_store;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use confab_common::binary::Launch;
use confab_common::config::{ConfigError, env_opt, env_parse, env_parse_range};
use confab_common::server::GrpcServer;
use confab_proto::ratelimit::v1 as pb;
use confab_proto::ratelimit::v1::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

pub use limiter::{
    Admission, Budget, Limit, Limiter, Limits, ManualClock, RequestClass, TimeShift, Usage,
};
pub use memory::MemoryLimiter;
pub use redis_store::RedisLimiter;
pub use service::{FailPolicy, RateLimitError, RateLimiter};

/// Health name that is NOT_SERVING while the backend (Redis) is unreachable.
pub const BACKEND_HEALTH_NAME: &str = "confab.ratelimit.v1.RateLimitService.backend";

/// Configuration read once at start.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub limits: Limits,
    /// `REDIS_URL`; in-process limits when unset.
    pub redis_url: Option<String>,
    pub fail_policy: FailPolicy,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Limits::default();
        let limits = Limits {
            requests_per_minute: env_parse_range("RATE_LIMIT_PER_MINUTE", 20u32, 1, 1_000_000)?,
            max_streams: env_parse_range("MAX_CONCURRENT_STREAMS", 3u32, 1, 100_000)?,
            daily_tokens: env_parse_range("DAILY_TOKEN_BUDGET", 100_000u64, 1, 1_000_000_000_000)?,
            lease_ttl: Duration::from_secs(env_parse_range(
                "RATE_LIMIT_LEASE_TTL_SECS",
                defaults.lease_ttl.as_secs(),
                1,
                3600,
            )?),
            reservation_ttl: defaults.reservation_ttl,
            reads: Budget::per_minute(env_parse_range(
                "RATE_LIMIT_READS_PER_MINUTE",
                defaults.reads.limit,
                1,
                1_000_000,
            )?),
            writes: Budget::per_minute(env_parse_range(
                "RATE_LIMIT_WRITES_PER_MINUTE",
                defaults.writes.limit,
                1,
                1_000_000,
            )?),
            sessions: Budget {
                limit: env_parse_range(
                    "RATE_LIMIT_SESSIONS_PER_HOUR",
                    defaults.sessions.limit,
                    1,
                    1_000_000,
                )?,
                period: Duration::from_secs(3600),
            },
        };
        let redis_url = env_opt("REDIS_URL")?;
        if let Some(url) = &redis_url {
            redis::Client::open(url.as_str()).map_err(|e| {
                ConfigError::new(
                    "REDIS_URL",
                    format!("not a redis URL (redis://host:port/): {e}"),
                )
            })?;
        }
        Ok(Self {
            limits,
            redis_url,
            fail_policy: env_parse("RATE_LIMIT_FAIL_POLICY", FailPolicy::Open)?,
        })
    }

    /// The limiter this configuration asks for.
    pub fn limiter(&self) -> anyhow::Result<Arc<dyn Limiter>> {
        Ok(match &self.redis_url {
            Some(url) => Arc::new(RedisLimiter::connect(url, self.limits.clone())?),
            None => Arc::new(MemoryLimiter::new(self.limits.clone())),
        })
    }
}

/// The gRPC adapter: extracts the request, calls the domain service, converts results.
#[derive(Clone)]
pub struct RateLimitServiceImpl {
    inner: Arc<RateLimiter>,
}

impl RateLimitServiceImpl {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let limiter = config.limiter()?;
        Ok(Self::from_limiter(RateLimiter::new(
            limiter,
            config.fail_policy,
        )))
    }

    pub fn from_limiter(limiter: RateLimiter) -> Self {
        Self {
            inner: Arc::new(limiter),
        }
    }

    pub fn domain(&self) -> &Arc<RateLimiter> {
        &self.inner
    }

    fn quota(&self, usage: &Usage) -> pb::Quota {
        let l = self.inner.limits();
        pb::Quota {
            requests_per_minute_limit: l.requests_per_minute,
            requests_remaining: usage.requests_remaining,
            requests_reset_at_ms: usage.requests_reset_at_ms,
            concurrent_streams_limit: l.max_streams,
            streams_in_use: usage.streams_in_use,
            daily_token_budget: l.daily_tokens,
            tokens_remaining: usage.tokens_remaining(l),
            tokens_reset_at_ms: usage.tokens_reset_at_ms(),
            tokens_reserved: usage.tokens_reserved,
        }
    }
}

fn subject(s: Option<pb::Subject>) -> String {
    s.map(|s| s.key).unwrap_or_default()
}

fn denial_message(limit: Limit, retry_secs: u64, usage: &Usage, limits: &Limits) -> String {
    match limit {
        Limit::RequestsPerMinute => format!(
            "rate limit: at most {} requests per minute; try again in {retry_secs} s",
            limits.requests_per_minute
        ),
        Limit::ConcurrentStreams => format!(
            "{} of {} concurrent answers are already streaming; wait for one to finish",
            usage.streams_in_use, limits.max_streams
        ),
        Limit::DailyTokens => format!(
            "daily token budget reached ({} of {} used, {} reserved by requests in flight); try again in {}",
            usage.tokens_used,
            limits.daily_tokens,
            usage.tokens_reserved,
            human_secs(retry_secs)
        ),
    }
}

fn class_of(c: i32) -> Result<RequestClass, Status> {
    match pb::RequestClass::try_from(c) {
        Ok(pb::RequestClass::Read) => Ok(RequestClass::Read),
        Ok(pb::RequestClass::Write) => Ok(RequestClass::Write),
        Ok(pb::RequestClass::Session) => Ok(RequestClass::Session),
        _ => Err(Status::invalid_argument(
            "class must be REQUEST_CLASS_READ, _WRITE or _SESSION",
        )),
    }
}

fn admit_message(class: RequestClass, budget: Budget, retry_ms: u64) -> String {
    let what = match class {
        RequestClass::Read => "read requests",
        RequestClass::Write => "write requests",
        RequestClass::Session => "new anonymous sessions from your network",
    };
    let per = match budget.period.as_secs() {
        60 => "minute".to_owned(),
        3600 => "hour".to_owned(),
        s => format!("{s} s"),
    };
    format!(
        "too many {what}: at most {} per {per}; try again in {}",
        budget.limit,
        human_secs(retry_ms.div_ceil(1000))
    )
}

fn human_secs(s: u64) -> String {
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimitServiceImpl {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let r = request.into_inner();
        let subject = subject(r.subject);
        let out = self
            .inner
            .acquire(
                &subject,
                u64::from(r.estimated_tokens),
                r.open_stream,
                &r.request_id,
            )
            .await?;
        let d = &out.decision;
        let retry_secs = u64::try_from(d.retry_after_ms).unwrap_or(0).div_ceil(1000);
        let (denied_by, message) = match d.denied_by {
            None => (pb::LimitKind::Unspecified, String::new()),
            Some(limit) => (
                match limit {
                    Limit::RequestsPerMinute => pb::LimitKind::RequestsPerMinute,
                    Limit::ConcurrentStreams => pb::LimitKind::ConcurrentStreams,
                    Limit::DailyTokens => pb::LimitKind::DailyTokens,
                },
                denial_message(limit, retry_secs, &d.usage, self.inner.limits()),
            ),
        };
        Ok(Response::new(pb::AcquireResponse {
            allowed: d.allowed(),
            reservation_id: out.reservation_id,
            lease_id: out.lease_id.clone(),
            denied_by: denied_by as i32,
            retry_after_seconds: u32::try_from(retry_secs).unwrap_or(u32::MAX),
            message,
            quota: Some(self.quota(&d.usage)),
            degraded: out.degraded,
            lease_ttl_seconds: if out.lease_id.is_empty() {
                0
            } else {
                self.inner.limits().lease_ttl.as_secs() as u32
            },
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .inner
            .release(
                &subject(r.subject),
                &r.reservation_id,
                &r.lease_id,
                u64::from(r.actual_tokens),
            )
            .await?;
        Ok(Response::new(pb::ReleaseResponse {
            quota: Some(self.quota(&out.usage)),
        }))
    }

    async fn renew_lease(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        let r = request.into_inner();
        let renewed = self.inner.renew(&subject(r.subject), &r.lease_id).await?;
        Ok(Response::new(pb::RenewLeaseResponse {
            renewed,
            lease_ttl_seconds: if renewed {
                self.inner.limits().lease_ttl.as_secs() as u32
            } else {
                0
            },
        }))
    }

    async fn admit(
        &self,
        request: Request<pb::AdmitRequest>,
    ) -> Result<Response<pb::AdmitResponse>, Status> {
        let r = request.into_inner();
        let class = class_of(r.class)?;
        let (a, degraded) = self.inner.admit(&subject(r.subject), class).await?;
        let budget = self.inner.limits().budget(class);
        let retry_ms = u64::try_from(a.retry_after_ms).unwrap_or(0);
        Ok(Response::new(pb::AdmitResponse {
            allowed: a.allowed,
            retry_after_ms: u32::try_from(retry_ms).unwrap_or(u32::MAX),
            remaining: a.remaining,
            limit: budget.limit,
            period_seconds: u32::try_from(budget.period.as_secs()).unwrap_or(u32::MAX),
            message: if a.allowed {
                String::new()
            } else {
                admit_message(class, budget, retry_ms)
            },
            degraded,
        }))
    }

    async fn get_quota(
        &self,
        request: Request<pb::GetQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        let r = request.into_inner();
        let out = self.inner.usage(&subject(r.subject)).await?;
        Ok(Response::new(self.quota(&out.usage)))
    }
}

/// The generated server around the service, ready for `Routes` or an in-process channel.
pub async fn server(
    config: Config,
) -> anyhow::Result<RateLimitServiceServer<RateLimitServiceImpl>> {
    Ok(RateLimitServiceServer::new(
        RateLimitServiceImpl::new(config).await?,
    ))
}

/// Keeps health in step with the backend: pings every second, flips statuses on change.
pub async fn monitor_backend(
    limiter: Arc<RateLimiter>,
    reporter: tonic_health::server::HealthReporter,
) {
    let mut was_ok = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = limiter.probe_backend().await;
        if ok == was_ok {
            continue;
        }
        was_ok = ok;
        let status = |up: bool| {
            if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        if ok {
            tracing::info!("rate-limit backend reachable again");
        } else {
            tracing::error!(
                policy = limiter.policy().label(),
                "rate-limit backend unreachable; health degraded"
            );
        }
        reporter
            .set_service_status(BACKEND_HEALTH_NAME, status(ok))
            .await;
        let service_up = ok || limiter.policy() == FailPolicy::Open;
        reporter
            .set_service_status(confab_proto::service_names::RATELIMIT, status(service_up))
            .await;
    }
}

/// Serves until shutdown, then drains.
pub async fn run(launch: Launch, config: Config) -> anyhow::Result<()> {
    let service = RateLimitServiceImpl::new(config.clone()).await?;
    let domain = service.domain().clone();
    let routes = Routes::new(RateLimitServiceServer::new(service));
    let server = GrpcServer::new(
        routes,
        &[confab_proto::service_names::RATELIMIT, BACKEND_HEALTH_NAME],
    )
    .await?;
    tracing::info!(
        backend = if config.redis_url.is_some() { "redis" } else { "in-process" },
        policy = config.fail_policy.label(),
        limits = ?config.limits,
        "rate limits"
    );
    let metrics_task = match launch.server.metrics_addr {
        Some(addr) => {
            let metrics = domain.metrics().clone();
            Some(
                confab_telemetry::spawn_metrics_server(addr, move || metrics.encode())
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot listen on CONFAB_METRICS_ADDR {addr}: {e}")
                    })?,
            )
        }
        None => None,
    };
    let monitor = tokio::spawn(monitor_backend(domain, server.health_reporter()));
    let result = server
        .serve(
            launch.listener,
            launch.shutdown,
            launch.server.shutdown_grace,
        )
        .await;
    monitor.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    result?;
    Ok(())
}
