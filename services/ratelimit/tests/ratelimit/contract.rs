//! One contract, two backends. Time is controlled: the in-process limiter runs on a
//! `ManualClock`; the Redis limiter gets a `TimeShift` added to Redis `TIME` in the script.

use std::sync::Arc;
use std::time::Duration;

use confab_common::testing::{RedisServer, unique_name};
use confab_ratelimit::limiter::{AcquireParams, Decision};
use confab_ratelimit::{
    Budget, Limit, Limiter, Limits, ManualClock, MemoryLimiter, RedisLimiter, RequestClass,
    TimeShift,
};

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Memory,
    Redis,
}

pub struct Backend {
    pub limiter: Arc<dyn Limiter>,
    advance: Box<dyn Fn(Duration) + Send + Sync>,
    pub redis: Option<RedisServer>,
    pub prefix: String,
}

impl Backend {
    pub async fn new(kind: Kind, limits: Limits) -> Self {
        match kind {
            Kind::Memory => {
                // 2025-01-01 12:00:00 UTC
                let clock = ManualClock::at_unix_ms(1_735_732_800_000);
                let c = clock.clone();
                Self {
                    limiter: Arc::new(MemoryLimiter::with_clock(limits, Arc::new(clock))),
                    advance: Box::new(move |d| c.advance(d)),
                    redis: None,
                    prefix: String::new(),
                }
            }
            Kind::Redis => {
                let redis = RedisServer::start().await;
                let shift = TimeShift::default();
                let s = shift.clone();
                let prefix = format!("{}:", unique_name("rl"));
                let limiter = RedisLimiter::connect(&redis.url(), limits)
                    .unwrap()
                    .with_prefix(prefix.clone())
                    .with_time_shift(shift);
                Self {
                    limiter: Arc::new(limiter),
                    advance: Box::new(move |d| s.advance(d)),
                    redis: Some(redis),
                    prefix,
                }
            }
        }
    }

    pub fn advance(&self, d: Duration) {
        (self.advance)(d)
    }

    pub async fn acquire(&self, subject: &str, tokens: u64, stream: bool) -> (Decision, String) {
        let id = unique_name("r");
        let d = self
            .limiter
            .acquire(
                subject,
                &AcquireParams {
                    id: id.clone(),
                    estimated_tokens: tokens,
                    open_stream: stream,
                },
            )
            .await
            .expect("backend answers");
        (d, id)
    }

    async fn allowed_count(&self, subject: &str, n: usize) -> usize {
        let mut allowed = 0;
        for _ in 0..n {
            if self.acquire(subject, 0, false).await.0.allowed() {
                allowed += 1;
            }
        }
        allowed
    }
}

fn limits(rpm: u32, streams: u32, tokens: u64) -> Limits {
    Limits {
        requests_per_minute: rpm,
        max_streams: streams,
        daily_tokens: tokens,
        lease_ttl: Duration::from_secs(30),
        reservation_ttl: Duration::from_secs(600),
        ..Limits::default()
    }
}

const S: Duration = Duration::from_secs(1);

async fn requests_per_minute_is_a_sliding_window(kind: Kind) {
    let b = Backend::new(kind, limits(10, 3, 1000)).await;
    let u = b.limiter.usage("user:a").await.unwrap();
    assert_eq!(u.requests_remaining, 10);
    assert_eq!(u.requests_reset_at_ms, u.now_ms);

    assert_eq!(b.allowed_count("user:a", 10).await, 10);
    let (d, _) = b.acquire("user:a", 0, false).await;
    assert_eq!(d.denied_by, Some(Limit::RequestsPerMinute));
    assert!(
        (1..=6000).contains(&d.retry_after_ms),
        "retry {}",
        d.retry_after_ms
    );
    assert_eq!(d.usage.requests_remaining, 0);
    assert!(d.usage.requests_reset_at_ms > d.usage.now_ms);
    // Another subject is unaffected.
    assert!(b.acquire("user:b", 0, false).await.0.allowed());

    // Half a minute later, half the window has slid by: 5 more, not 10.
    b.advance(30 * S);
    assert_eq!(b.allowed_count("user:a", 10).await, 5);
    // A minute after the last admission the full allowance is back, and no more:
    // no 2x burst across a window boundary.
    b.advance(60 * S);
    assert_eq!(b.allowed_count("user:a", 25).await, 10);
    // Retry-after is honest: waiting it out admits exactly one.
    let (d, _) = b.acquire("user:a", 0, false).await;
    b.advance(Duration::from_millis(d.retry_after_ms as u64));
    assert_eq!(b.allowed_count("user:a", 3).await, 1);
}

async fn stream_leases_are_counted_released_and_expire(kind: Kind) {
    let b = Backend::new(kind, limits(100, 2, 1000)).await;
    let (d1, l1) = b.acquire("user:s", 0, true).await;
    let (d2, l2) = b.acquire("user:s", 0, true).await;
    assert!(d1.allowed() && d2.allowed());
    assert_eq!(d2.usage.streams_in_use, 2);
    let (d3, _) = b.acquire("user:s", 0, true).await;
    assert_eq!(d3.denied_by, Some(Limit::ConcurrentStreams));
    assert!((1..=30_000).contains(&d3.retry_after_ms));
    // A request without a stream is still allowed.
    assert!(b.acquire("user:s", 0, false).await.0.allowed());

    let u = b.limiter.release("user:s", &l1, &l1, 0).await.unwrap();
    assert_eq!(u.streams_in_use, 1);
    let (d4, l4) = b.acquire("user:s", 0, true).await;
    assert!(d4.allowed());

    // Renewal keeps l2 alive; l4 (never renewed) expires after its TTL.
    b.advance(20 * S);
    assert!(b.limiter.renew("user:s", &l2).await.unwrap());
    b.advance(20 * S);
    let u = b.limiter.usage("user:s").await.unwrap();
    assert_eq!(u.streams_in_use, 1, "l4 expired, l2 renewed");
    assert!(!b.limiter.renew("user:s", &l4).await.unwrap());
    b.advance(31 * S);
    assert_eq!(b.limiter.usage("user:s").await.unwrap().streams_in_use, 0);
    assert!(!b.limiter.renew("user:s", &l2).await.unwrap());
    assert!(!b.limiter.renew("user:s", "unknown").await.unwrap());
}

async fn token_budget_reserves_and_reconciles(kind: Kind) {
    let b = Backend::new(kind, limits(100, 3, 1000)).await;
    let (d, r1) = b.acquire("user:t", 600, false).await;
    assert!(d.allowed());
    assert_eq!(d.usage.tokens_reserved, 600);
    assert_eq!(d.usage.tokens_remaining(b.limiter.limits()), 400);

    // Over budget while r1 is in flight; it would fit once r1 settles, so the retry
    // hint is at most the reservation's lifetime, not the day.
    let (d, _) = b.acquire("user:t", 600, false).await;
    assert_eq!(d.denied_by, Some(Limit::DailyTokens));
    assert!(
        (1..=600_000).contains(&d.retry_after_ms),
        "{}",
        d.retry_after_ms
    );
    assert_eq!(d.usage.tokens_reserved, 600, "a denial reserves nothing");

    // Reconcile with the real usage; a retried Release charges once.
    let u = b.limiter.release("user:t", &r1, "", 150).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_reserved), (150, 0));
    let u = b.limiter.release("user:t", &r1, "", 150).await.unwrap();
    assert_eq!((u.tokens_used, u.tokens_reserved), (150, 0));
    assert_eq!(u.tokens_remaining(b.limiter.limits()), 850);

    // A failed call (0 tokens used) gives the whole reservation back.
    let (d, r2) = b.acquire("user:t", 850, false).await;
    assert!(d.allowed());
    let u = b.limiter.release("user:t", &r2, "", 0).await.unwrap();
    assert_eq!(u.tokens_remaining(b.limiter.limits()), 850);

    // Real usage above the estimate is charged (never undercounted).
    let (_, r3) = b.acquire("user:t", 100, false).await;
    let u = b.limiter.release("user:t", &r3, "", 900).await.unwrap();
    assert_eq!(u.tokens_used, 1050);
    assert_eq!(u.tokens_remaining(b.limiter.limits()), 0);

    // Exhausted for the day: retry at the next UTC midnight.
    let (d, _) = b.acquire("user:t", 1, false).await;
    assert_eq!(d.denied_by, Some(Limit::DailyTokens));
    let to_midnight = d.usage.tokens_reset_at_ms() - d.usage.now_ms;
    assert_eq!(d.retry_after_ms, to_midnight);
    assert!(to_midnight <= 86_400_000);
    // A request reserving no tokens is not blocked by the budget.
    assert!(b.acquire("user:t", 0, false).await.0.allowed());

    b.advance(Duration::from_millis(to_midnight as u64 + 1000));
    let (d, _) = b.acquire("user:t", 1000, false).await;
    assert!(d.allowed(), "a new day, a new budget: {d:?}");
}

async fn unreleased_reservations_expire_and_renewal_keeps_them(kind: Kind) {
    let b = Backend::new(kind, limits(100, 3, 1000)).await;
    let (_, _forgotten) = b.acquire("user:x", 400, false).await;
    let (_, streaming) = b.acquire("user:x", 400, true).await;
    assert_eq!(
        b.limiter.usage("user:x").await.unwrap().tokens_reserved,
        800
    );
    // The stream renews its lease every 20 s for 11 minutes; its reservation lives on.
    for _ in 0..33 {
        b.advance(20 * S);
        assert!(b.limiter.renew("user:x", &streaming).await.unwrap());
    }
    let u = b.limiter.usage("user:x").await.unwrap();
    assert_eq!(u.tokens_reserved, 400, "the forgotten one expired");
    let u = b
        .limiter
        .release("user:x", &streaming, &streaming, 300)
        .await
        .unwrap();
    assert_eq!(
        (u.tokens_used, u.tokens_reserved, u.streams_in_use),
        (300, 0, 0)
    );
}

async fn a_decision_is_all_or_nothing(kind: Kind) {
    let b = Backend::new(kind, limits(5, 1, 1000)).await;
    let (d, _) = b.acquire("ip:10.0.0.1", 100, true).await;
    assert!(d.allowed());
    for _ in 0..3 {
        let (d, _) = b.acquire("ip:10.0.0.1", 100, true).await;
        assert_eq!(d.denied_by, Some(Limit::ConcurrentStreams));
    }
    let u = b.limiter.usage("ip:10.0.0.1").await.unwrap();
    assert_eq!(u.requests_remaining, 4, "denials consume no request");
    assert_eq!(u.tokens_reserved, 100, "denials reserve no tokens");
    // With several limits exceeded, the longest wait wins (the budget's day).
    let (d, _) = b.acquire("ip:10.0.0.1", 5000, true).await;
    assert_eq!(d.denied_by, Some(Limit::DailyTokens));
}

async fn concurrent_callers_never_over_admit(kind: Kind) {
    let b = Arc::new(Backend::new(kind, limits(1000, 1000, 1000)).await);
    let tasks: Vec<_> = (0..150)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.acquire("user:c", 10, false).await.0.allowed() })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 100);
    let u = b.limiter.usage("user:c").await.unwrap();
    assert_eq!(u.tokens_reserved, 1000);
}

async fn admitted(b: &Backend, subject: &str, class: RequestClass, n: usize) -> usize {
    let mut allowed = 0;
    for _ in 0..n {
        if b.limiter.admit(subject, class).await.unwrap().allowed {
            allowed += 1;
        }
    }
    allowed
}

async fn request_classes_have_separate_budgets(kind: Kind) {
    let mut l = limits(5, 3, 1000);
    l.reads = Budget::per_minute(6);
    l.writes = Budget::per_minute(3);
    l.sessions = Budget {
        limit: 2,
        period: Duration::from_secs(3600),
    };
    let b = Backend::new(kind, l).await;
    let first = b
        .limiter
        .admit("user:a", RequestClass::Write)
        .await
        .unwrap();
    assert!(first.allowed);
    assert_eq!(first.remaining, 2);
    assert_eq!(admitted(&b, "user:a", RequestClass::Write, 5).await, 2);
    let denied = b
        .limiter
        .admit("user:a", RequestClass::Write)
        .await
        .unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    // One write every 20 s: the wait is at most that, and at least most of it.
    assert!(
        (19_000..=20_000).contains(&denied.retry_after_ms),
        "retry {}",
        denied.retry_after_ms
    );
    // Writes exhausted: reads, sessions, the model-call quota and other users are not.
    assert_eq!(admitted(&b, "user:a", RequestClass::Read, 10).await, 6);
    assert_eq!(admitted(&b, "user:b", RequestClass::Write, 10).await, 3);
    assert_eq!(
        admitted(&b, "ip:2001:db8:1:2::/64", RequestClass::Session, 5).await,
        2
    );
    assert!(b.acquire("user:a", 0, false).await.0.allowed());
    // Waiting out the retry-after admits exactly one more.
    b.advance(Duration::from_millis(denied.retry_after_ms as u64));
    assert_eq!(admitted(&b, "user:a", RequestClass::Write, 3).await, 1);
    // A full period later the whole burst is back, and no more.
    b.advance(60 * S);
    assert_eq!(admitted(&b, "user:a", RequestClass::Write, 10).await, 3);
    // Sessions refill over the hour: one every 30 min (81 s have passed so far).
    b.advance(27 * 60 * S);
    assert_eq!(
        admitted(&b, "ip:2001:db8:1:2::/64", RequestClass::Session, 3).await,
        0
    );
    b.advance(2 * 60 * S);
    assert_eq!(
        admitted(&b, "ip:2001:db8:1:2::/64", RequestClass::Session, 3).await,
        1
    );
}

async fn concurrent_admissions_never_over_admit(kind: Kind) {
    let mut l = limits(5, 3, 1000);
    l.reads = Budget::per_minute(40);
    let b = Arc::new(Backend::new(kind, l).await);
    let tasks: Vec<_> = (0..120)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move {
                b.limiter
                    .admit("user:c", RequestClass::Read)
                    .await
                    .unwrap()
                    .allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 40);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Memory).await
            })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Kind::Redis).await
            })*
        }
    };
}

contract!(
    requests_per_minute_is_a_sliding_window,
    stream_leases_are_counted_released_and_expire,
    token_budget_reserves_and_reconciles,
    unreleased_reservations_expire_and_renewal_keeps_them,
    a_decision_is_all_or_nothing,
    concurrent_callers_never_over_admit,
    request_classes_have_separate_budgets,
    concurrent_admissions_never_over_admit,
);

#[tokio::test]
async fn redis_keys_share_a_hash_tag_and_expire_by_themselves() {
    let b = Backend::new(Kind::Redis, limits(10, 3, 1000)).await;
    let (_, r) = b.acquire("user:k", 100, true).await;
    b.limiter.release("user:k", &r, &r, 50).await.unwrap();
    b.acquire("user:k", 100, true).await;
    b.limiter
        .admit("user:k", RequestClass::Write)
        .await
        .unwrap();

    let client = ::redis::Client::open(b.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{}*", b.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 6, "{keys:?}");
    for key in keys {
        assert!(key.contains("{user:k}"), "{key}");
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 86_400_000 + 1000, "{key} has PTTL {ttl}");
    }
}

#[tokio::test]
async fn idle_subjects_are_forgotten_in_process() {
    let clock = ManualClock::at_unix_ms(1_735_732_800_000);
    let m = MemoryLimiter::with_clock(limits(10, 3, 1000), Arc::new(clock.clone()));
    let params = AcquireParams {
        id: "a".into(),
        estimated_tokens: 0,
        open_stream: false,
    };
    for i in 0..5000 {
        m.acquire(&format!("ip:10.0.{}.{}", i / 256, i % 256), &params)
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(3600));
    for _ in 0..5000 {
        m.usage("user:one").await.unwrap();
    }
    assert!(m.tracked_subjects() < 10, "{}", m.tracked_subjects());
}
