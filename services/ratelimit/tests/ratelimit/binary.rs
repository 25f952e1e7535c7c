//! The `confab-ratelimit` binary: starts, reports SERVING, lists its service through
//! reflection, and refuses bad configuration with exit code 64.

use confab_common::testing::{assert_binary_serves, assert_config_error_exits_64, spawn_service};

use crate::BIN;

#[tokio::test]
async fn serves_health_and_reflection() {
    assert_binary_serves(BIN, confab_proto::service_names::RATELIMIT).await;
}

#[test]
fn bad_listen_address_exits_64_naming_the_variable() {
    assert_config_error_exits_64(BIN, "CONFAB_ADDR", "not-an-address");
}

#[test]
fn bad_limits_exit_64_naming_the_variable() {
    for (var, value) in [
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("RATE_LIMIT_PER_MINUTE", "lots"),
        ("MAX_CONCURRENT_STREAMS", "-1"),
        ("DAILY_TOKEN_BUDGET", "0"),
        ("RATE_LIMIT_FAIL_POLICY", "sometimes"),
        ("REDIS_URL", "http://not-redis"),
    ] {
        assert_config_error_exits_64(BIN, var, value);
    }
}

#[tokio::test]
async fn serves_prometheus_metrics_when_asked() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = confab_common::testing::free_port();
    let (_child, addr) =
        spawn_service(BIN, &[("CONFAB_METRICS_ADDR", format!("127.0.0.1:{port}"))]).await;
    let mut client =
        confab_proto::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient::new(
            confab_common::testing::connect(addr).await,
        );
    let r = client
        .acquire(confab_proto::ratelimit::v1::AcquireRequest {
            subject: Some(confab_proto::ratelimit::v1::Subject {
                key: "user:metrics".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(r#"confab_ratelimit_decisions_total{result="allowed",limit="none"} 1"#),
        "{body}"
    );
}
