//! Two `confab-ratelimit` processes sharing one real redis-server, many concurrent
//! callers on both: limits hold globally, leases are shared, a dead holder's lease expires.

use std::time::{Duration, Instant};

use confab_common::testing::{RedisServer, connect, spawn_service, unique_name};
use confab_proto::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient;
use confab_proto::ratelimit::v1::{
    AcquireRequest, AcquireResponse, GetQuotaRequest, LimitKind, ReleaseRequest, RenewLeaseRequest,
    Subject,
};
use tonic::transport::Channel;

use crate::BIN;

type Client = RateLimitServiceClient<Channel>;

fn subject(key: &str) -> Option<Subject> {
    Some(Subject { key: key.into() })
}

async fn acquire(c: &mut Client, key: &str, tokens: u32, stream: bool) -> AcquireResponse {
    c.acquire(AcquireRequest {
        subject: subject(key),
        estimated_tokens: tokens,
        open_stream: stream,
        request_id: unique_name("req"),
    })
    .await
    .expect("acquire")
    .into_inner()
}

/// Fires `n` concurrent acquires alternating between the replicas.
async fn burst(
    clients: &[Client; 2],
    key: &str,
    n: usize,
    tokens: u32,
    stream: bool,
) -> Vec<AcquireResponse> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut c = clients[i % 2].clone();
            let key = key.to_owned();
            tokio::spawn(async move { acquire(&mut c, &key, tokens, stream).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_replicas_sharing_redis() {
    let redis = RedisServer::start().await;
    let env = [
        ("REDIS_URL", redis.url()),
        ("RATE_LIMIT_PER_MINUTE", "10".to_owned()),
        ("MAX_CONCURRENT_STREAMS", "3".to_owned()),
        ("DAILY_TOKEN_BUDGET", "1000".to_owned()),
        ("RATE_LIMIT_LEASE_TTL_SECS", "6".to_owned()),
    ];
    let (mut a_proc, a_addr) = spawn_service(BIN, &env).await;
    let (_b_proc, b_addr) = spawn_service(BIN, &env).await;
    let clients = [
        Client::new(connect(a_addr).await),
        Client::new(connect(b_addr).await),
    ];
    let user = unique_name("user:u");

    // Requests per minute: 10 globally, not 10 per replica. GCRA frees one slot every
    // 6 s, so a burst slower than that may legitimately admit one more per 6 s.
    let started = Instant::now();
    let rs = burst(&clients, &user, 40, 0, false).await;
    let elapsed = started.elapsed();
    let allowed = rs.iter().filter(|r| r.allowed).count();
    let slack = (elapsed.as_secs() / 6) as usize;
    assert!(
        (10..=10 + slack).contains(&allowed),
        "{allowed} admitted in {elapsed:?}"
    );
    let denied = rs.iter().find(|r| !r.allowed).unwrap();
    assert_eq!(denied.denied_by, LimitKind::RequestsPerMinute as i32);
    assert!((1..=6).contains(&denied.retry_after_seconds));
    assert!(!denied.message.is_empty());

    // Daily tokens: 1000 / 300 = 3 reservations, exactly, whichever replica answers.
    let user = unique_name("user:t");
    let rs = burst(&clients, &user, 10, 300, false).await;
    assert_eq!(rs.iter().filter(|r| r.allowed).count(), 3);
    let q = clients[1]
        .clone()
        .get_quota(GetQuotaRequest {
            subject: subject(&user),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((q.tokens_reserved, q.tokens_remaining), (900, 100));

    // Streams: 3 leases globally; a lease taken on A is renewed and released on B.
    let user = unique_name("user:s");
    let rs = burst(&clients, &user, 10, 0, true).await;
    let granted: Vec<_> = rs.iter().filter(|r| r.allowed).collect();
    assert_eq!(granted.len(), 3);
    assert!(
        granted
            .iter()
            .all(|r| !r.lease_id.is_empty() && r.lease_ttl_seconds == 6)
    );
    let denied = rs.iter().find(|r| !r.allowed).unwrap();
    assert_eq!(denied.denied_by, LimitKind::ConcurrentStreams as i32);
    let mut b = clients[1].clone();
    let lease = &granted[0];
    let renewed = b
        .renew_lease(RenewLeaseRequest {
            subject: subject(&user),
            lease_id: lease.lease_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(renewed.renewed);
    let released = b
        .release(ReleaseRequest {
            subject: subject(&user),
            reservation_id: lease.reservation_id.clone(),
            lease_id: lease.lease_id.clone(),
            actual_tokens: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.quota.unwrap().streams_in_use, 2);

    // A holder that dies never releases: take a lease through A, kill A; B still
    // counts it (state lives in Redis), then it expires by itself after its TTL.
    let user = unique_name("user:k");
    let held = acquire(&mut clients[0].clone(), &user, 0, true).await;
    assert!(held.allowed);
    a_proc.signal("KILL");
    a_proc.wait_exit(Duration::from_secs(10)).await;
    let quota = |mut c: Client, user: String| async move {
        c.get_quota(GetQuotaRequest {
            subject: subject(&user),
        })
        .await
        .unwrap()
        .into_inner()
    };
    assert_eq!(quota(b.clone(), user.clone()).await.streams_in_use, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if quota(b.clone(), user.clone()).await.streams_in_use == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead holder's lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let renewed = b
        .renew_lease(RenewLeaseRequest {
            subject: subject(&user),
            lease_id: held.lease_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!renewed.renewed, "an expired lease cannot be renewed");
}
