//! The real conversation (SQLite), files (local) and rate-limit (in-process) services behind chat.

use std::time::Duration;

use confab_chat::{ChatDeps, ChatServiceImpl, Config};
use confab_common::Identity;
use confab_common::channel::in_process;
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_event::Event;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use tokio_stream::StreamExt;

use crate::upstream::FakeUpstream;
use crate::{collect, completed, openai_config, serve_chat, started, text};
use confab_proto::files::v1 as fpb;
use confab_proto::files::v1::file_service_client::FileServiceClient;

#[tokio::test]
async fn with_the_real_conversation_files_and_ratelimit_services() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeUpstream::start().await;
    let conversation = in_process(
        confab_conversation::server(confab_conversation::Config::sqlite(dir.path()))
            .await
            .unwrap(),
    );
    let limits = confab_ratelimit::Config {
        limits: confab_ratelimit::Limits {
            requests_per_minute: 100,
            max_streams: 3,
            daily_tokens: 100_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let files = in_process(
        confab_files::server(confab_files::Config::local(dir.path().join("files")))
            .await
            .unwrap(),
    );
    let deps = ChatDeps {
        conversation: conversation.clone(),
        files: files.clone(),
        ratelimit: in_process(confab_ratelimit::server(limits).await.unwrap()),
    };
    let config = Config {
        openai: Some(openai_config(&upstream)),
        ..Config::default()
    };
    let addr = serve_chat(ChatServiceImpl::with_deps(config, deps).unwrap()).await;
    let mut client = ChatServiceClient::new(confab_common::testing::connect(addr).await);
    let mut store = ConversationServiceClient::new(conversation);
    let user = Identity::user(confab_common::testing::unique_name("real"));

    // A text attachment, uploaded through the real file service.
    let mut file_client = FileServiceClient::new(files);
    let doc = b"# Quarterly notes\n\nRevenue grew 12% while costs fell.\n";
    let up = file_client
        .start_upload(user.request(fpb::StartUploadRequest {
            filename: "notes.md".into(),
            declared_size: doc.len() as u64,
            declared_content_type: "text/markdown".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    file_client
        .upload_chunk(user.request(fpb::UploadChunkRequest {
            upload_id: up.upload_id.clone(),
            offset: 0,
            data: doc.to_vec(),
        }))
        .await
        .unwrap();
    let file = file_client
        .finish_upload(user.request(fpb::FinishUploadRequest {
            upload_id: up.upload_id,
            sha256: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .file
        .unwrap();

    let evs = collect(
        client
            .send_message(user.request(chat::SendMessageRequest {
                content: "Say hello".into(),
                file_ids: vec![file.id.clone()],
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(text(&evs), "Hello world!");
    completed(&evs);
    let plan = started(&evs).context.unwrap();
    assert_eq!(plan.files[0].filename, "notes.md");
    assert!(plan.files[0].parts.iter().all(|p| p.included));
    let sent = upstream.chat_requests()[0]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sent.contains("Revenue grew 12%"), "{sent}");
    let conv_id = evs[0].conversation_id.clone();
    let c = store
        .get_conversation(user.request(conv::GetConversationRequest {
            conversation_id: conv_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.title, "Test Title");
    assert!(c.title_set);

    // A slow answer stopped by the user keeps its partial text.
    let mut s = client
        .send_message(user.request(chat::SendMessageRequest {
            conversation_id: conv_id.clone(),
            content: "[scenario:slow]".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let first = s.next().await.unwrap().unwrap();
    let _delta = s.next().await.unwrap().unwrap();
    let stopped = client
        .stop_generation(user.request(chat::StopGenerationRequest {
            generation_id: first.generation_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.stopped);
    let rest = collect(s).await;
    assert_eq!(
        completed(&rest).finish_reason,
        chat::FinishReason::Stopped as i32
    );

    // Edit the stopped question and resend; the stopped answer stays retrievable.
    let slow_user = match &first.event {
        Some(Event::Started(s)) => s.user_message_id.clone(),
        _ => unreachable!(),
    };
    let evs = collect(
        client
            .edit_and_resend(user.request(chat::EditAndResendRequest {
                conversation_id: conv_id.clone(),
                message_id: slow_user,
                content: "a quick one instead".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let new_answer = started(&evs).assistant_message_id;
    let all = store
        .list_messages(user.request(conv::ListMessagesRequest {
            conversation_id: conv_id.clone(),
            include_superseded: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(all.len(), 6, "{all:#?}");
    assert_eq!(all.iter().filter(|m| !m.superseded).count(), 4);
    let stopped_msg = all
        .iter()
        .find(|m| {
            Some(&m.id)
                == match &first.event {
                    Some(Event::Started(s)) => Some(&s.assistant_message_id),
                    _ => None,
                }
        })
        .unwrap();
    assert_eq!(stopped_msg.status, conv::MessageStatus::Stopped as i32);
    assert!(stopped_msg.content.starts_with("Partial"));
    assert!(stopped_msg.superseded);
    let fresh = all.iter().find(|m| m.id == new_answer).unwrap();
    assert_eq!(fresh.status, conv::MessageStatus::Complete as i32);
    assert!(fresh.context.is_some());
    assert_eq!(fresh.usage.unwrap().total_tokens, 15);

    // Streams were all returned and tokens accounted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let q = client
            .get_quota(user.request(chat::GetQuotaRequest {}))
            .await
            .unwrap()
            .into_inner();
        if q.streams_in_use == 0 && q.tokens_reserved == 0 {
            assert!(q.tokens_remaining < 100_000);
            assert_eq!(q.requests_per_minute_limit, 100);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{q:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
