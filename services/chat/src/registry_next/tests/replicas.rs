//! Two chat binaries sharing Redis and one conversation store, as two replicas behind a
//! per-request balancer: Attach and Stop on the replica that does not run the answer, an
//! owner killed mid-answer (SIGKILL), one stopped for a deploy (SIGTERM), and Redis
//! restarted mid-answer.

#[path = "../../chat/tests/chat/upstream.rs"]
mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use confab_common::Identity;
use confab_common::testing::{ChildGuard, RedisServer, connect, local_listener, spawn_service};
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_event::Event;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use upstream::FakeUpstream;

const WAIT: Duration = Duration::from_secs(30);

struct Mesh {
    redis: RedisServer,
    upstream: FakeUpstream,
    conversation: SocketAddr,
    _data: tempfile::TempDir,
}

impl Mesh {
    async fn start() -> Self {
        let redis = RedisServer::start().await;
        let upstream = FakeUpstream::start().await;
        let data = tempfile::tempdir().unwrap();
        let svc = confab_conversation::server(confab_conversation::Config::sqlite(data.path()))
            .await
            .unwrap();
        let (listener, conversation) = local_listener().await;
        let server = confab_common::server::GrpcServer::new(
            tonic::service::Routes::new(svc),
            &[confab_proto::service_names::CONVERSATION],
        )
        .await
        .unwrap();
        tokio::spawn(server.serve(
            listener,
            confab_common::Shutdown::new(),
            Duration::from_secs(1),
        ));
        Self {
            redis,
            upstream,
            conversation,
            _data: data,
        }
    }

    async fn replica(&self, extra: &[(&str, String)]) -> (ChildGuard, SocketAddr) {
        let mut env = vec![
            ("REDIS_URL", self.redis.url()),
            (
                "CONFAB_CONVERSATION_URL",
                format!("http://{}", self.conversation),
            ),
            ("OPENAI_API_KEY", "sk-test".into()),
            ("OPENAI_BASE_URL", self.upstream.base_url()),
            ("GENERATION_LEASE_SECONDS", "3".into()),
        ];
        env.extend(extra.iter().cloned());
        spawn_service(env!("CARGO_BIN_EXE_confab-chat"), &env).await
    }

    async fn conversations(&self) -> ConversationServiceClient<Channel> {
        ConversationServiceClient::new(connect(self.conversation).await)
    }
}

fn user() -> Identity {
    Identity::user("alice")
}

async fn chat_client(addr: SocketAddr) -> ChatServiceClient<Channel> {
    ChatServiceClient::new(connect(addr).await)
}

/// A detached answer on `addr`; returns its Started event and the stream.
async fn send(
    addr: SocketAddr,
    scenario: &str,
) -> (
    chat::ChatEvent,
    chat::Started,
    tonic::Streaming<chat::ChatEvent>,
) {
    let mut client = chat_client(addr).await;
    let mut stream = client
        .send_message(user().request(chat::SendMessageRequest {
            content: format!("hello [scenario:{scenario}]"),
            detach_on_disconnect: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let Some(Event::Started(s)) = first.event.clone() else {
        panic!("expected Started, got {first:?}");
    };
    (first, s, stream)
}

/// Events until the last one (Completed or Failed), bounded in time.
async fn until_end(stream: &mut tonic::Streaming<chat::ChatEvent>) -> Vec<chat::ChatEvent> {
    let mut out = vec![];
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(e)) = stream.next().await {
            let end = matches!(e.event, Some(Event::Completed(_) | Event::Failed(_)));
            out.push(e);
            if end {
                break;
            }
        }
    })
    .await
    .expect("the answer ends in time");
    out
}

async fn attach(
    addr: SocketAddr,
    generation_id: &str,
    after: u64,
) -> tonic::Streaming<chat::ChatEvent> {
    chat_client(addr)
        .await
        .attach(user().request(chat::AttachRequest {
            generation_id: generation_id.to_owned(),
            after_sequence: after,
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn stored(mesh: &Mesh, conversation_id: &str, message_id: &str) -> conv::Message {
    mesh.conversations()
        .await
        .get_message(user().request(conv::GetMessageRequest {
            conversation_id: conversation_id.to_owned(),
            message_id: message_id.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
}

fn text_of(events: &[chat::ChatEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Delta(d)) => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_and_stop_through_the_other_replica() {
    let mesh = Mesh::start().await;
    let (_a, a) = mesh.replica(&[]).await;
    let (_b, b) = mesh.replica(&[]).await;
    let (first, started, mut primary) = send(a, "slow").await;
    let _ = primary.next().await;
    let id = first.generation_id.clone();

    // Replays from sequence 1 on B and follows live events.
    let mut on_b = attach(b, &id, 0).await;
    let replayed = on_b.next().await.unwrap().unwrap();
    assert_eq!(replayed.sequence, 1);
    assert!(matches!(replayed.event, Some(Event::Started(_))));
    let live = on_b.next().await.unwrap().unwrap();
    assert_eq!(live.sequence, 2);

    // Stop on B ends the answer running on A within a second.
    let asked = tokio::time::Instant::now();
    let stopped = chat_client(b)
        .await
        .stop_generation(user().request(chat::StopGenerationRequest {
            generation_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.stopped);
    let events = until_end(&mut primary).await;
    let took = asked.elapsed();
    match events.last().and_then(|e| e.event.clone()) {
        Some(Event::Completed(c)) => {
            assert_eq!(c.finish_reason, chat::FinishReason::Stopped as i32)
        }
        other => panic!("expected Completed(stopped), got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(1) + Duration::from_millis(500),
        "stop took {took:?}"
    );
    let on_b_rest = until_end(&mut on_b).await;
    assert!(matches!(
        on_b_rest.last().and_then(|e| e.event.clone()),
        Some(Event::Completed(_))
    ));
    let m = stored(&mesh, &first.conversation_id, &started.assistant_message_id).await;
    assert_eq!(m.status, conv::MessageStatus::Stopped as i32);

    // Another user sees nothing.
    let status = chat_client(b)
        .await
        .attach(Identity::user("mallory").request(chat::AttachRequest {
            generation_id: id,
            after_sequence: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    eprintln!("stop through the other replica: {took:?} until the last event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_hands_its_answer_over_as_interrupted_within_15s() {
    let mesh = Mesh::start().await;
    let (mut a, a_addr) = mesh.replica(&[]).await;
    let (_b, b) = mesh.replica(&[]).await;
    let (first, started, mut primary) = send(a_addr, "slow").await;
    let _ = primary.next().await;
    let mut on_b = attach(b, &first.generation_id, 0).await;
    let mut seen = vec![];
    // Some text first (and one save), then the owner dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.signal("KILL");
    let killed = tokio::time::Instant::now();
    seen.extend(until_end(&mut on_b).await);
    let noticed = killed.elapsed();
    let last = seen.last().and_then(|e| e.event.clone());
    let Some(Event::Failed(f)) = last else {
        panic!("expected Failed, got {last:?}");
    };
    assert!(f.retryable, "interrupted answers can be retried");
    assert!(f.message.contains("interrupted"), "{}", f.message);
    assert!(
        noticed < Duration::from_secs(15),
        "noticed after {noticed:?}"
    );

    let m = stored(&mesh, &first.conversation_id, &started.assistant_message_id).await;
    assert_eq!(m.status, conv::MessageStatus::Failed as i32);
    assert!(
        m.error_message.contains("interrupted"),
        "{}",
        m.error_message
    );
    let streamed = text_of(&seen);
    assert!(streamed.starts_with("Partial more"), "{streamed:?}");
    assert_eq!(
        m.content, streamed,
        "the stored answer keeps the partial text"
    );
    eprintln!("SIGKILLed owner noticed after {noticed:?} (lease 3 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_replica_finishes_short_answers_and_hands_long_ones_over() {
    let mesh = Mesh::start().await;
    let (mut a, a_addr) = mesh
        .replica(&[("CONFAB_SHUTDOWN_GRACE_SECS", "6".into())])
        .await;
    let (_b, b) = mesh.replica(&[]).await;
    let (short_first, short, mut short_stream) = send(a_addr, "medium").await;
    let (long_first, long, mut long_stream) = send(a_addr, "slow").await;
    let mut long_on_b = attach(b, &long_first.generation_id, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.signal("TERM");

    // The short one (about 1.5 s) completes; the long one is handed over.
    let short_events = until_end(&mut short_stream).await;
    assert!(matches!(
        short_events.last().and_then(|e| e.event.clone()),
        Some(Event::Completed(_))
    ));
    let long_events = until_end(&mut long_stream).await;
    let Some(Event::Failed(f)) = long_events.last().and_then(|e| e.event.clone()) else {
        panic!("expected Failed, got {:?}", long_events.last());
    };
    assert!(f.retryable && f.message.contains("interrupted"), "{f:?}");
    let on_b = until_end(&mut long_on_b).await;
    assert!(matches!(
        on_b.last().and_then(|e| e.event.clone()),
        Some(Event::Failed(_))
    ));
    assert!(
        a.wait_exit(Duration::from_secs(15)).await.is_some(),
        "it exits"
    );

    let s = stored(
        &mesh,
        &short_first.conversation_id,
        &short.assistant_message_id,
    )
    .await;
    assert_eq!(s.status, conv::MessageStatus::Complete as i32);
    let l = stored(
        &mesh,
        &long_first.conversation_id,
        &long.assistant_message_id,
    )
    .await;
    assert_eq!(l.status, conv::MessageStatus::Failed as i32);
    assert!(
        l.error_message.contains("interrupted"),
        "{}",
        l.error_message
    );
    assert!(l.content.starts_with("Partial more"), "{:?}", l.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_answer_loses_nothing_and_attach_comes_back() {
    let mut mesh = Mesh::start().await;
    let (_a, a) = mesh.replica(&[]).await;
    let (_b, b) = mesh.replica(&[]).await;
    let (first, started, mut primary) = send(a, "medium").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.redis.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.redis.restart().await;

    // The owner's client never notices; the answer completes and is stored.
    let events = until_end(&mut primary).await;
    assert!(matches!(
        events.last().and_then(|e| e.event.clone()),
        Some(Event::Completed(_))
    ));
    let m = stored(&mesh, &first.conversation_id, &started.assistant_message_id).await;
    assert_eq!(m.status, conv::MessageStatus::Complete as i32);
    assert_eq!(m.content, text_of(&events));

    // Attach on the other replica works again, replaying the whole answer.
    let mut replay = None;
    for _ in 0..50 {
        let r = chat_client(b)
            .await
            .attach(user().request(chat::AttachRequest {
                generation_id: first.generation_id.clone(),
                after_sequence: 0,
            }))
            .await;
        if let Ok(s) = r {
            replay = Some(s.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut replay = replay.expect("Attach works once Redis is back");
    let replayed = until_end(&mut replay).await;
    assert_eq!(replayed.first().map(|e| e.sequence), Some(1));
    assert_eq!(text_of(&replayed), text_of(&events));
}
