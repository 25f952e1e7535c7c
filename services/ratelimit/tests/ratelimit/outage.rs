//! Redis stopped mid-test: the failure policy decides (open: allowed + degraded;
//! closed: UNAVAILABLE), health shows it, and everything recovers when Redis returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_common::server::probe_health;
use confab_common::testing::{RedisServer, connect, spawn_service, unique_name};
use confab_proto::ratelimit::v1::Subject;
use confab_proto::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient;
use confab_proto::ratelimit::v1::{AcquireRequest, AdmitRequest, RequestClass};
use confab_proto::service_names::RATELIMIT;
use confab_ratelimit::{BACKEND_HEALTH_NAME, FailPolicy, Limits, RateLimiter, RedisLimiter};
use tonic::transport::Channel;

use crate::BIN;

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn request(user: &str) -> AcquireRequest {
    AcquireRequest {
        subject: Some(Subject { key: user.into() }),
        estimated_tokens: 10,
        open_stream: true,
        request_id: String::new(),
    }
}

async fn start(
    policy: &str,
) -> (
    RedisServer,
    confab_common::testing::ChildGuard,
    SocketAddr,
    RateLimitServiceClient<Channel>,
) {
    let redis = RedisServer::start().await;
    let (child, addr) = spawn_service(
        BIN,
        &[
            ("REDIS_URL", redis.url()),
            ("RATE_LIMIT_FAIL_POLICY", policy.to_owned()),
            ("RATE_LIMIT_PER_MINUTE", "1000".to_owned()),
        ],
    )
    .await;
    let client = RateLimitServiceClient::new(connect(addr).await);
    (redis, child, addr, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_allows_degraded_then_recovers() {
    let (mut redis, _child, addr, mut client) = start("open").await;
    let user = unique_name("user:o");
    let r = client.acquire(request(&user)).await.unwrap().into_inner();
    assert!(r.allowed && !r.degraded);

    redis.stop().await;
    let r = client.acquire(request(&user)).await.unwrap().into_inner();
    assert!(r.allowed && r.degraded, "{r:?}");
    assert!(!r.reservation_id.is_empty() && !r.lease_id.is_empty());
    eventually("backend health NOT_SERVING", || async {
        !probe_health(addr, BACKEND_HEALTH_NAME).await
    })
    .await;
    assert!(
        probe_health(addr, RATELIMIT).await,
        "open policy keeps serving"
    );
    assert!(
        probe_health(addr, "").await,
        "the process itself is healthy"
    );

    redis.restart().await;
    eventually("decisions from Redis again", || {
        let mut c = client.clone();
        let user = user.clone();
        async move {
            c.acquire(request(&user))
                .await
                .is_ok_and(|r| r.get_ref().allowed && !r.get_ref().degraded)
        }
    })
    .await;
    eventually("backend health SERVING", || async {
        probe_health(addr, BACKEND_HEALTH_NAME).await
    })
    .await;
}

fn admit(subject: &str, class: RequestClass) -> AdmitRequest {
    AdmitRequest {
        subject: Some(Subject {
            key: subject.into(),
        }),
        class: class as i32,
    }
}

/// The request-class budgets over gRPC, on the Redis backend of the real binary: the
/// denial carries the numbers; a bad class is INVALID_ARGUMENT; an outage fails open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admit_over_grpc_says_the_numbers_and_fails_open() {
    let redis = RedisServer::start().await;
    let (_child, _addr) = spawn_service(
        BIN,
        &[
            ("REDIS_URL", redis.url()),
            ("RATE_LIMIT_WRITES_PER_MINUTE", "2".to_owned()),
            ("RATE_LIMIT_SESSIONS_PER_HOUR", "1".to_owned()),
        ],
    )
    .await;
    let mut redis = redis;
    let mut client = RateLimitServiceClient::new(connect(_addr).await);
    let user = unique_name("user:w");
    for _ in 0..2 {
        let r = client
            .admit(admit(&user, RequestClass::Write))
            .await
            .unwrap()
            .into_inner();
        assert!(r.allowed && !r.degraded, "{r:?}");
    }
    let r = client
        .admit(admit(&user, RequestClass::Write))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);
    assert_eq!((r.limit, r.period_seconds, r.remaining), (2, 60, 0));
    assert!((1..=30_000).contains(&r.retry_after_ms), "{r:?}");
    assert!(
        r.message.contains("at most 2 per minute") && r.message.contains("try again in"),
        "{}",
        r.message
    );
    let net = "ip:2001:db8:7:7::/64";
    assert!(
        client
            .admit(admit(net, RequestClass::Session))
            .await
            .unwrap()
            .get_ref()
            .allowed
    );
    let r = client
        .admit(admit(net, RequestClass::Session))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed && r.message.contains("per hour"), "{r:?}");
    let err = client
        .admit(admit(&user, RequestClass::Unspecified))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    redis.stop().await;
    let r = client
        .admit(admit(&user, RequestClass::Write))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed && r.degraded, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_with_unavailable_then_recovers() {
    let (mut redis, _child, addr, mut client) = start("closed").await;
    let user = unique_name("user:c");
    assert!(
        client
            .acquire(request(&user))
            .await
            .unwrap()
            .get_ref()
            .allowed
    );

    redis.stop().await;
    let err = client.acquire(request(&user)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("RATE_LIMIT_FAIL_POLICY=closed"),
        "{}",
        err.message()
    );
    eventually("service NOT_SERVING", || async {
        !probe_health(addr, RATELIMIT).await && !probe_health(addr, BACKEND_HEALTH_NAME).await
    })
    .await;
    assert!(probe_health(addr, "").await);

    redis.restart().await;
    eventually("allowed again", || {
        let mut c = client.clone();
        let user = user.clone();
        async move {
            c.acquire(request(&user))
                .await
                .is_ok_and(|r| r.get_ref().allowed)
        }
    })
    .await;
    eventually("service SERVING", || async {
        probe_health(addr, RATELIMIT).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_are_counted_per_policy() {
    let mut redis = RedisServer::start().await;
    let limiter = RedisLimiter::connect(&redis.url(), Limits::default()).unwrap();
    let domain = Arc::new(
        RateLimiter::new(Arc::new(limiter), FailPolicy::Open)
            .with_metrics(confab_ratelimit::metrics::Metrics::default()),
    );
    assert!(
        domain
            .acquire("user:m", 1, false, "")
            .await
            .unwrap()
            .decision
            .allowed()
    );
    assert!(domain.backend_ok());
    redis.stop().await;
    let out = domain.acquire("user:m", 1, false, "").await.unwrap();
    assert!(out.degraded && out.decision.allowed());
    assert!(!domain.backend_ok());
    assert_eq!(domain.metrics().backend_errors("open"), 1);
    // While it is down, calls are decided at once (no waiting on Redis each time).
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert!(
            domain
                .acquire("user:m", 1, false, "")
                .await
                .unwrap()
                .degraded
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(domain.metrics().backend_errors("open"), 6);
    let text = domain.metrics().encode();
    assert!(
        text.contains("confab_ratelimit_backend_errors_total{policy=\"open\"} 6"),
        "{text}"
    );
    // Back: the next probe (at most 500 ms later) succeeds and decisions use Redis again.
    redis.restart().await;
    eventually("Redis decisions again", || {
        let domain = domain.clone();
        async move {
            !domain
                .acquire("user:m", 1, false, "")
                .await
                .unwrap()
                .degraded
        }
    })
    .await;
    assert!(domain.backend_ok());
    assert!(text.contains("confab_ratelimit_decisions_total"), "{text}");
}

#[tokio::test]
async fn subjects_and_ids_are_validated() {
    let domain = RateLimiter::new(
        Arc::new(confab_ratelimit::MemoryLimiter::new(Limits::default())),
        FailPolicy::Open,
    );
    for bad in [
        "",
        "bob",
        "user:",
        "user:{x}",
        "user:a b",
        &format!("user:{}", "a".repeat(200)),
    ] {
        let err = domain.acquire(bad, 0, false, "").await.unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::InvalidArgument,
            "{bad:?}"
        );
    }
    for good in [
        "user:alice@example.com",
        "ip:2001:db8::1",
        "ip:2001:db8:1:2::/64",
        "ip:203.0.113.9",
    ] {
        assert!(domain.acquire(good, 0, false, "").await.is_ok(), "{good}");
    }
    let err = domain
        .release("user:a", "not an id!", "", 0)
        .await
        .unwrap_err();
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::InvalidArgument
    );
}
