//! A send that fails before its answer starts leaves no conversation behind, whichever
//! step refused it, and says why through the error table.

use super::*;

async fn conversations(channel: GrpcChannel, user: &Identity) -> Vec<conv::Conversation> {
    ConversationServiceClient::new(channel)
        .list_conversations(user.request(conv::ListConversationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .conversations
}

async fn refused(w: &Wired, user: &Identity, req: chat::SendMessageRequest) -> tonic::Status {
    match w.client.clone().send_message(user.request(req)).await {
        Ok(_) => panic!("the send was accepted"),
        Err(s) => s,
    }
}

#[tokio::test]
async fn a_failed_send_leaves_no_empty_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeUpstream::start().await;
    let backends = BackendsConfig::new(
        &ServiceUrls::default(),
        confab_conversation::Config::sqlite(dir.path()),
        confab_files::Config::local(dir.path().join("files")),
        limits(100, 100_000),
    );
    let config = Config {
        openai: Some(openai_config(&upstream)),
        ..Config::default()
    };
    let w = wire(&backends, config).await;
    let user = Identity::user(confab_common::testing::unique_name("refused"));

    // Unknown model: refused before anything is stored.
    let s = refused(
        &w,
        &user,
        chat::SendMessageRequest {
            content: "hello".into(),
            model: "no-such-model".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("unknown model"), "{s:?}");

    // An unknown file: the conversation created beside the lookup is deleted again.
    let s = refused(
        &w,
        &user,
        chat::SendMessageRequest {
            content: "read this".into(),
            file_ids: vec!["01890000-0000-7000-8000-000000000000".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    assert!(
        conversations(w.conversation.clone(), &user)
            .await
            .is_empty()
    );

    // A turn that works keeps its conversation (the rule above is not "delete all").
    let ok = collect(
        w.client
            .clone()
            .send_message(user.request(chat::SendMessageRequest {
                content: "hello".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    completed(&ok);
    assert_eq!(conversations(w.conversation.clone(), &user).await.len(), 1);
}

#[tokio::test]
async fn a_quota_refusal_leaves_no_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeUpstream::start().await;
    // One token a day: every estimate is over budget.
    let backends = BackendsConfig::new(
        &ServiceUrls::default(),
        confab_conversation::Config::sqlite(dir.path()),
        confab_files::Config::local(dir.path().join("files")),
        limits(100, 1),
    );
    let config = Config {
        openai: Some(openai_config(&upstream)),
        ..Config::default()
    };
    let w = wire(&backends, config).await;
    let user = Identity::user(confab_common::testing::unique_name("quota"));
    let s = refused(
        &w,
        &user,
        chat::SendMessageRequest {
            content: "hello".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    assert!(
        conversations(w.conversation.clone(), &user)
            .await
            .is_empty()
    );
    assert!(upstream.chat_requests().is_empty());
}

#[tokio::test]
async fn a_model_that_cannot_start_leaves_no_conversation_and_no_server_detail() {
    let dir = tempfile::tempdir().unwrap();
    let backends = BackendsConfig::new(
        &ServiceUrls::default(),
        confab_conversation::Config::sqlite(dir.path()),
        confab_files::Config::local(dir.path().join("files")),
        limits(100, 100_000),
    );
    // Only the embedded model, whose file is missing: preparing it fails after the
    // conversation was created.
    let missing = dir.path().join("models/secret-location/none.gguf");
    let config = Config {
        openai: None,
        model_path: missing,
        ..Config::default()
    };
    let w = wire(&backends, config).await;
    let user = Identity::user(confab_common::testing::unique_name("nomodel"));
    let s = refused(
        &w,
        &user,
        chat::SendMessageRequest {
            content: "hello".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    assert!(!s.message().contains("secret-location"), "{s:?}");
    assert!(
        conversations(w.conversation.clone(), &user)
            .await
            .is_empty()
    );
    // The lease went back: the quota shows nothing in use.
    let q = w
        .client
        .clone()
        .get_quota(user.request(chat::GetQuotaRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((q.streams_in_use, q.tokens_reserved), (0, 0), "{q:?}");
}
