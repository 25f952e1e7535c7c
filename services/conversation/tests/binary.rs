//! The `confab-conversation` binary: starts, reports SERVING, lists its service through
//! reflection, and refuses bad configuration with exit code 64.

use confab_common::testing::{
    assert_binary_serves, assert_config_error_exits_64, run_to_exit, spawn_service,
};

const BIN: &str = env!("CARGO_BIN_EXE_confab-conversation");

#[tokio::test]
async fn serves_health_and_reflection() {
    assert_binary_serves(BIN, confab_proto::service_names::CONVERSATION).await;
}

#[test]
fn bad_listen_address_exits_64_naming_the_variable() {
    assert_config_error_exits_64(BIN, "CONFAB_ADDR", "not-an-address");
}

#[test]
fn bad_mongodb_settings_exit_64_naming_the_variable() {
    let (code, stderr) = run_to_exit(BIN, &[("MONGODB_URI", "http://not-mongo")]);
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(stderr.contains("MONGODB_URI"), "stderr: {stderr}");
    let (code, stderr) = run_to_exit(
        BIN,
        &[
            ("MONGODB_URI", "mongodb://127.0.0.1:1"),
            ("MONGODB_DB_NAME", "bad/name"),
        ],
    );
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(stderr.contains("MONGODB_DB_NAME"), "stderr: {stderr}");
}

#[tokio::test]
async fn serves_on_mongodb_when_configured() {
    let mongo = confab_common::testing::MongoServer::shared().await;
    let (_child, addr) = spawn_service(
        BIN,
        &[
            ("MONGODB_URI", mongo.uri()),
            (
                "MONGODB_DB_NAME",
                confab_common::testing::unique_name("bin"),
            ),
        ],
    )
    .await;
    let mut client =
        confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient::new(
            confab_common::testing::connect(addr).await,
        );
    let user = confab_common::Identity::user("binary-test");
    let c = client
        .create_conversation(user.request(
            confab_proto::conversation::v1::CreateConversationRequest {
                title: "stored in mongo".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let hits = client
        .search_conversations(user.request(
            confab_proto::conversation::v1::SearchConversationsRequest {
                query: "mongo".into(),
                page_size: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].conversation.as_ref().unwrap().id, c.id);
}
