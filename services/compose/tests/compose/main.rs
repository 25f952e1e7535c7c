//! Chat wired through the composition point to the real conversation (SQLite), files
//! (local) and rate-limit (in-process) services: in this process, or each its own server
//! over loopback. The model is the fake OpenAI-compatible upstream of chat's tests.

#[path = "../../../chat/tests/chat/upstream.rs"]
mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use confab_chat::provider::openai::{OpenAiConfig, model_spec};
use confab_chat::{ChatServiceImpl, Config};
use confab_common::config::ServiceUrls;
use confab_common::{GrpcChannel, Identity};
use confab_compose::{Backends, BackendsConfig};
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_event::Event;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::chat::v1::chat_service_server::ChatServiceServer;
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use confab_proto::files::v1 as fpb;
use confab_proto::files::v1::file_service_client::FileServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use upstream::FakeUpstream;

mod failed_sends;

const WAIT: Duration = Duration::from_secs(60);

fn openai_config(upstream: &FakeUpstream) -> OpenAiConfig {
    let mut o = OpenAiConfig::new("sk-test", Some(upstream.base_url()));
    o.first_byte_timeout = Duration::from_secs(2);
    o.idle_timeout = Duration::from_secs(2);
    o.models = Some(vec![
        model_spec("openai-compatible", "gpt-4o"),
        model_spec("openai-compatible", "gpt-4o-mini"),
    ]);
    o
}

fn limits(requests_per_minute: u32, daily_tokens: u64) -> confab_ratelimit::Config {
    confab_ratelimit::Config {
        limits: confab_ratelimit::Limits {
            requests_per_minute,
            max_streams: 3,
            daily_tokens,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Chat behind the production server, its backends built by the composition point.
struct Wired {
    client: ChatServiceClient<Channel>,
    conversation: GrpcChannel,
    files: GrpcChannel,
}

async fn wire(backends: &BackendsConfig, config: Config) -> Wired {
    let backends = Backends::build(backends).await.expect("backends");
    let svc = ChatServiceImpl::with_deps(config, backends.chat_deps()).unwrap();
    let addr = serve_chat(svc).await;
    Wired {
        client: ChatServiceClient::new(confab_common::testing::connect(addr).await),
        conversation: backends.conversation.channel.clone(),
        files: backends.files.channel.clone(),
    }
}

async fn serve_chat(svc: ChatServiceImpl) -> SocketAddr {
    let (listener, addr) = confab_common::testing::local_listener().await;
    let server = confab_common::server::GrpcServer::new(
        tonic::service::Routes::new(ChatServiceServer::new(svc)),
        &[confab_proto::service_names::CHAT],
    )
    .await
    .unwrap();
    tokio::spawn(server.serve(
        listener,
        confab_common::Shutdown::new(),
        Duration::from_secs(1),
    ));
    addr
}

/// All events until the stream ends.
async fn collect(mut s: tonic::Streaming<chat::ChatEvent>) -> Vec<chat::ChatEvent> {
    let mut out = vec![];
    loop {
        match tokio::time::timeout(WAIT, s.next())
            .await
            .expect("stream stalled")
        {
            Some(Ok(e)) => out.push(e),
            Some(Err(status)) => panic!("stream error: {status:?}"),
            None => return out,
        }
    }
}

fn started(evs: &[chat::ChatEvent]) -> chat::Started {
    match &evs[0].event {
        Some(Event::Started(s)) => s.clone(),
        other => panic!("first event is not Started: {other:?}"),
    }
}

fn text(evs: &[chat::ChatEvent]) -> String {
    evs.iter()
        .filter_map(|e| match &e.event {
            Some(Event::Delta(d)) => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

fn completed(evs: &[chat::ChatEvent]) -> chat::Completed {
    match &evs.last().unwrap().event {
        Some(Event::Completed(c)) => c.clone(),
        other => panic!("last event is not Completed: {other:?}"),
    }
}

async fn upload(files: GrpcChannel, user: &Identity, name: &str, doc: &[u8]) -> fpb::FileInfo {
    let mut file_client = FileServiceClient::new(files);
    let up = file_client
        .start_upload(user.request(fpb::StartUploadRequest {
            filename: name.into(),
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
    file_client
        .finish_upload(user.request(fpb::FinishUploadRequest {
            upload_id: up.upload_id,
            sha256: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .file
        .unwrap()
}

#[tokio::test]
async fn with_the_real_conversation_files_and_ratelimit_services() {
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
    let mut client = w.client;
    let mut store = ConversationServiceClient::new(w.conversation);
    let user = Identity::user(confab_common::testing::unique_name("real"));

    // A text attachment, uploaded through the real file service.
    let doc = b"# Quarterly notes\n\nRevenue grew 12% while costs fell.\n";
    let file = upload(w.files, &user, "notes.md", doc).await;

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
    let first_started = match &first.event {
        Some(Event::Started(s)) => s.clone(),
        other => panic!("first event is not Started: {other:?}"),
    };
    let evs = collect(
        client
            .edit_and_resend(user.request(chat::EditAndResendRequest {
                conversation_id: conv_id.clone(),
                message_id: first_started.user_message_id.clone(),
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
        .find(|m| m.id == first_started.assistant_message_id)
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

/// Serves a generated server on loopback; its URL.
async fn serve<S>(svc: S) -> String
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (listener, addr) = confab_common::testing::local_listener().await;
    let server =
        confab_common::server::GrpcServer::new(tonic::service::Routes::new(svc), &[S::NAME])
            .await
            .unwrap();
    tokio::spawn(server.serve(
        listener,
        confab_common::Shutdown::new(),
        Duration::from_secs(1),
    ));
    format!("http://{addr}")
}

#[tokio::test]
async fn real_dependencies_as_separate_servers_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeUpstream::start().await;
    let conv_url = serve(
        confab_conversation::server(confab_conversation::Config::sqlite(dir.path()))
            .await
            .unwrap(),
    )
    .await;
    let files_url = serve(
        confab_files::server(confab_files::Config::local(dir.path().join("files")))
            .await
            .unwrap(),
    )
    .await;
    let rl_url = serve(
        confab_ratelimit::server(confab_ratelimit::Config::default())
            .await
            .unwrap(),
    )
    .await;
    // Remote because each URL is set: the configurations given are not used.
    let urls = ServiceUrls {
        conversation: Some(conv_url.clone()),
        files: Some(files_url),
        ratelimit: Some(rl_url),
        chat: None,
    };
    let backends = BackendsConfig::new(
        &urls,
        confab_conversation::Config::sqlite(dir.path().join("unused")),
        confab_files::Config::local(dir.path().join("unused-files")),
        confab_ratelimit::Config::default(),
    );
    let config = Config {
        openai: Some(openai_config(&upstream)),
        ..Config::default()
    };
    let backends = Backends::build(&backends).await.unwrap();
    assert!(!backends.ratelimit_in_process());
    assert_eq!(
        backends.conversation.url.as_deref(),
        Some(conv_url.as_str())
    );
    let addr = serve_chat(ChatServiceImpl::with_deps(config, backends.chat_deps()).unwrap()).await;
    let mut client = ChatServiceClient::new(confab_common::testing::connect(addr).await);
    let user = Identity::user(confab_common::testing::unique_name("loopback"));
    let evs = collect(
        client
            .send_message(user.request(chat::SendMessageRequest {
                content: "hello over the network".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(text(&evs), "Hello world!");
    let mut store = ConversationServiceClient::new(
        confab_common::testing::connect(conv_url.trim_start_matches("http://").parse().unwrap())
            .await,
    );
    let msgs = store
        .list_messages(user.request(conv::ListMessagesRequest {
            conversation_id: evs[0].conversation_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].status, conv::MessageStatus::Complete as i32);
    assert_eq!(msgs[1].content, "Hello world!");
    let q = client
        .get_quota(user.request(chat::GetQuotaRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.streams_in_use, 0);
    assert_eq!(q.tokens_reserved, 0);
    // The unused in-process configurations created nothing.
    assert!(!dir.path().join("unused").exists());
}
