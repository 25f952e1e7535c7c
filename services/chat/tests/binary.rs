//! The `confab-chat` binary: starts, reports SERVING, lists its service through
//! reflection, and refuses bad configuration with exit code 64.

use confab_common::testing::{assert_binary_serves, assert_config_error_exits_64};

const BIN: &str = env!("CARGO_BIN_EXE_confab-chat");

#[tokio::test]
async fn serves_health_and_reflection() {
    assert_binary_serves(BIN, confab_proto::service_names::CHAT).await;
}

#[test]
fn bad_listen_address_exits_64_naming_the_variable() {
    assert_config_error_exits_64(BIN, "CONFAB_ADDR", "not-an-address");
}

#[path = "chat/upstream.rs"]
mod upstream;

/// One answer from the fake upstream, then `GET /metrics` shows its time to first token
/// and tokens, and the in-process rate limiter's decision.
#[tokio::test]
async fn serves_prometheus_metrics_when_asked() {
    use confab_proto::chat::v1 as chat;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = upstream::FakeUpstream::start().await;
    let port = confab_common::testing::free_port();
    let data = tempfile::tempdir().unwrap();
    let (_child, addr) = confab_common::testing::spawn_service(
        BIN,
        &[
            ("CONFAB_METRICS_ADDR", format!("127.0.0.1:{port}")),
            ("CONFAB_DATA_DIR", data.path().display().to_string()),
            ("OPENAI_API_KEY", "sk-test".into()),
            ("OPENAI_BASE_URL", fake.base_url()),
            ("OPENAI_MODEL", "metrics-test-model".into()),
        ],
    )
    .await;
    let mut client = chat::chat_service_client::ChatServiceClient::new(
        confab_common::testing::connect(addr).await,
    );
    let user = confab_common::Identity::user("metrics-user");
    let mut s = client
        .send_message(user.request(chat::SendMessageRequest {
            content: "hello".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    while let Some(ev) = s.message().await.unwrap() {
        assert!(
            !matches!(ev.event, Some(chat::chat_event::Event::Failed(_))),
            "{ev:?}"
        );
    }

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for line in [
        r#"confab_time_to_first_token_seconds_count{model="metrics-test-model"} 1"#,
        r#"confab_model_tokens_total{model="metrics-test-model",kind="prompt"} 12"#,
        r#"confab_model_tokens_total{model="metrics-test-model",kind="completion"} 3"#,
        // The in-process rate limiter's, too.
        r#"confab_ratelimit_decisions_total{result="allowed",limit="none"} 1"#,
    ] {
        assert!(body.contains(line), "{line}: {body}");
    }
}
