//! Chat service tests through the real gRPC server: a fake OpenAI-compatible upstream,
//! the conversation / files / rate-limit contracts in-process (or over loopback).

mod embedded;
mod fakes;
mod real;
mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use confab_chat::provider::openai::{OpenAiConfig, model_spec};
use confab_chat::{ChatDeps, ChatServiceImpl, Config};
use confab_common::Identity;
use confab_common::channel::{in_process, remote};
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_event::Event;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::chat::v1::chat_service_server::ChatServiceServer;
use confab_proto::conversation::v1 as conv;
use fakes::{FakeConversation, FakeFiles, FakeLimits};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use upstream::FakeUpstream;

const WAIT: Duration = Duration::from_secs(60);

pub struct Harness {
    pub client: ChatServiceClient<Channel>,
    pub upstream: FakeUpstream,
    pub conv: FakeConversation,
    pub files: FakeFiles,
    pub limits: FakeLimits,
    pub user: Identity,
}

pub fn openai_config(upstream: &FakeUpstream) -> OpenAiConfig {
    let mut o = OpenAiConfig::new("sk-test", Some(upstream.base_url()));
    o.first_byte_timeout = Duration::from_secs(2);
    o.idle_timeout = Duration::from_secs(2);
    o.models = Some(vec![
        model_spec("openai-compatible", "gpt-4o"),
        model_spec("openai-compatible", "gpt-4o-mini"),
        model_spec("openai-compatible", "text-only-llm"),
    ]);
    o
}

/// Chat behind the production server (health, reflection, trace spans, TCP_NODELAY).
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

impl Harness {
    /// Chat over loopback gRPC; its dependencies in-process.
    pub async fn start() -> Self {
        let upstream = FakeUpstream::start().await;
        let (conv, files, limits) = (
            FakeConversation::default(),
            FakeFiles::default(),
            FakeLimits::default(),
        );
        let deps = ChatDeps {
            conversation: in_process(conv.server()),
            files: in_process(files.server()),
            ratelimit: in_process(limits.server()),
        };
        let config = Config {
            openai: Some(openai_config(&upstream)),
            save_interval: Duration::from_millis(50),
            ..Config::default()
        };
        let svc = ChatServiceImpl::with_deps(config, deps).unwrap();
        let addr = serve_chat(svc).await;
        let client = ChatServiceClient::new(confab_common::testing::connect(addr).await);
        Self {
            client,
            upstream,
            conv,
            files,
            limits,
            user: Identity::user(confab_common::testing::unique_name("user")),
        }
    }

    pub fn req<T>(&self, m: T) -> tonic::Request<T> {
        self.user.request(m)
    }

    pub async fn send(&self, content: &str) -> tonic::Streaming<chat::ChatEvent> {
        self.send_req(chat::SendMessageRequest {
            content: content.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn send_req(&self, r: chat::SendMessageRequest) -> tonic::Streaming<chat::ChatEvent> {
        self.client
            .clone()
            .send_message(self.req(r))
            .await
            .expect("send accepted")
            .into_inner()
    }
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

fn failed(evs: &[chat::ChatEvent]) -> chat::Failed {
    match &evs.last().unwrap().event {
        Some(Event::Failed(f)) => f.clone(),
        other => panic!("last event is not Failed: {other:?}"),
    }
}

fn completed(evs: &[chat::ChatEvent]) -> chat::Completed {
    match &evs.last().unwrap().event {
        Some(Event::Completed(c)) => c.clone(),
        other => panic!("last event is not Completed: {other:?}"),
    }
}

fn assert_sequenced(evs: &[chat::ChatEvent]) {
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.sequence, i as u64 + 1);
        assert_eq!(e.generation_id, evs[0].generation_id);
        assert!(!e.conversation_id.is_empty());
    }
}

fn status_of(m: &conv::Message) -> conv::MessageStatus {
    conv::MessageStatus::try_from(m.status).unwrap()
}

/// Waits until `f` holds (bounded).
async fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn fast_deltas_travel_in_frames_over_a_reused_upstream_connection() {
    let h = Harness::start().await;
    // 50 tokens about 10 ms apart: sent in display frames (16 ms), not one event each.
    let evs = collect(h.send("[scenario:paced]").await).await;
    let expected: String = (0..50).map(|i| format!("t{i} ")).collect();
    assert_eq!(text(&evs), expected);
    let deltas = evs
        .iter()
        .filter(|e| matches!(e.event, Some(Event::Delta(_))))
        .count();
    assert!((2..45).contains(&deltas), "{deltas} delta events");
    let conv_id = evs[0].conversation_id.clone();
    for _ in 0..4 {
        // Time for the previous body's end to arrive and the connection to go idle.
        tokio::time::sleep(Duration::from_millis(120)).await;
        let evs = collect(
            h.send_req(chat::SendMessageRequest {
                conversation_id: conv_id.clone(),
                content: "[scenario:linger]".into(),
                ..Default::default()
            })
            .await,
        )
        .await;
        assert!(matches!(
            evs.last().unwrap().event,
            Some(Event::Completed(_))
        ));
    }
    // The answer's and the title's connections, reused by the later answers.
    assert!(
        h.upstream.connections() <= 2,
        "{} upstream connections for 5 answers",
        h.upstream.connections()
    );
}

#[tokio::test]
async fn streams_stores_and_names_the_first_exchange() {
    let h = Harness::start().await;
    let evs = collect(h.send("Say hello").await).await;
    assert_sequenced(&evs);
    let s = started(&evs);
    assert!(s.conversation_created);
    assert_eq!(s.model, "gpt-4o");
    assert_eq!(s.provider, "openai-compatible");
    assert!(!s.embedded_model);
    assert_eq!(text(&evs), "Hello world!");
    let kinds: Vec<_> = evs
        .iter()
        .map(|e| match e.event.as_ref().unwrap() {
            Event::Started(_) => "started",
            Event::Delta(_) => "delta",
            Event::Usage(_) => "usage",
            Event::TitleUpdated(_) => "title",
            Event::Completed(_) => "completed",
            Event::Failed(_) => "failed",
        })
        .collect();
    // Deltas that were already waiting may be coalesced into one event.
    let mut kinds = kinds;
    kinds.dedup();
    assert_eq!(kinds, ["started", "delta", "usage", "title", "completed"]);
    let c = completed(&evs);
    assert_eq!(c.finish_reason, chat::FinishReason::Stop as i32);
    assert_eq!(c.usage.unwrap().total_tokens, 15);

    let conv_id = &evs[0].conversation_id;
    let msgs = h.conv.messages(conv_id);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].content, "Say hello");
    assert_eq!(msgs[0].role, conv::Role::User as i32);
    assert_eq!(msgs[1].content, "Hello world!");
    assert_eq!(status_of(&msgs[1]), conv::MessageStatus::Complete);
    assert_eq!(msgs[1].parent_id, msgs[0].id);
    assert_eq!(msgs[1].generation_id, evs[0].generation_id);
    assert_eq!(msgs[1].usage.unwrap().total_tokens, 15);
    let plan = msgs[1].context.clone().unwrap();
    assert_eq!(plan.model, "gpt-4o");
    assert_eq!(plan.messages.last().unwrap().message_id, msgs[0].id);
    let c = h.conv.conversation(conv_id);
    assert_eq!(c.title, "Test Title");
    // The answer's 15 tokens and the title's 33 (30 + 3) in one release.
    assert_eq!(h.limits.0.lock().released, vec![15 + 33]);
    let m = confab_chat::metrics::Metrics::global();
    assert!(m.tokens_of("gpt-4o-mini", "prompt") >= 30);
    assert!(m.tokens_of("gpt-4o", "completion") >= 3);
    assert!(
        m.encode()
            .contains("confab_time_to_first_token_seconds_count{model=\"gpt-4o\"}")
    );

    // The request upstream streamed with usage.
    let req = &h.upstream.chat_requests()[0];
    assert_eq!(req["stream"], true);
    assert_eq!(req["stream_options"]["include_usage"], true);

    // The second exchange carries history and is not renamed.
    let evs2 = collect(
        h.send_req(chat::SendMessageRequest {
            conversation_id: conv_id.clone(),
            content: "again".into(),
            ..Default::default()
        })
        .await,
    )
    .await;
    assert!(!started(&evs2).conversation_created);
    assert!(
        !evs2
            .iter()
            .any(|e| matches!(e.event, Some(Event::TitleUpdated(_))))
    );
    let req = &h.upstream.chat_requests()[1];
    assert_eq!(req["messages"].as_array().unwrap().len(), 3);
    assert_eq!(req["messages"][1]["content"], "Hello world!");
}

#[tokio::test]
async fn tolerates_compatible_server_deviations() {
    let h = Harness::start().await;
    let evs = collect(h.send("[scenario:deviations]").await).await;
    assert_eq!(text(&evs), "Hi there");
    let c = completed(&evs);
    assert_eq!(c.finish_reason, chat::FinishReason::Stop as i32);
    // No usage from upstream: estimated from the plan and the answer.
    assert!(c.usage.unwrap().completion_tokens > 0);
    let msgs = h.conv.messages(&evs[0].conversation_id);
    assert_eq!(status_of(&msgs[1]), conv::MessageStatus::Complete);
    assert!(h.limits.0.lock().released[0] > 0);
}

async fn assert_failure(scenario: &str, code: chat::FailureCode, partial: &str) {
    let h = Harness::start().await;
    let evs = collect(h.send(&format!("[scenario:{scenario}]")).await).await;
    assert_sequenced(&evs);
    let f = failed(&evs);
    assert_eq!(f.code, code as i32, "{scenario}: {f:?}");
    assert!(!f.message.is_empty());
    let msgs = h.conv.messages(&evs[0].conversation_id);
    let answer = msgs
        .iter()
        .find(|m| m.id == f.assistant_message_id)
        .unwrap();
    assert_eq!(status_of(answer), conv::MessageStatus::Failed, "{scenario}");
    assert_eq!(answer.content, partial, "{scenario}");
    assert!(!answer.error_message.is_empty());
    let limits = h.limits.0.lock();
    assert_eq!(
        limits.released.len(),
        1,
        "{scenario}: budget reconciled once"
    );
    assert_eq!(limits.in_flight, 0);
}

#[tokio::test]
async fn upstream_failures_become_failed_events_with_the_partial_answer() {
    use chat::FailureCode as F;
    tokio::join!(
        assert_failure("error", F::UpstreamError, "Half an answer"),
        assert_failure("malformed", F::UpstreamError, "Broken"),
        assert_failure("cut", F::UpstreamUnavailable, "Cut off"),
        assert_failure("500", F::UpstreamUnavailable, ""),
        assert_failure("hang", F::UpstreamTimeout, ""),
        assert_failure("idle", F::UpstreamTimeout, "Then"),
    );
}

#[tokio::test]
async fn upstream_429_is_retryable_with_its_delay() {
    let h = Harness::start().await;
    let evs = collect(h.send("[scenario:429]").await).await;
    let f = failed(&evs);
    assert_eq!(f.code, chat::FailureCode::UpstreamRateLimited as i32);
    assert!(f.retryable);
    assert_eq!(f.retry_after_seconds, 7);
    assert!(f.message.contains("Rate limit reached"));
    // No answer tokens; the conversation was still named (the title's 30 + 3 tokens).
    assert_eq!(h.limits.0.lock().released, vec![33]);
}

#[tokio::test]
async fn dropping_the_stream_cancels_upstream_and_stores_stopped() {
    let h = Harness::start().await;
    let mut s = h.send("[scenario:slow]").await;
    let first = s.next().await.unwrap().unwrap();
    let conv_id = first.conversation_id.clone();
    // Wait for some text, then go away.
    loop {
        let e = s.next().await.unwrap().unwrap();
        if matches!(e.event, Some(Event::Delta(_))) {
            break;
        }
    }
    drop(s);
    let up = &h.upstream;
    eventually(|| up.dropped() == 1).await;
    let conv = h.conv.clone();
    eventually(|| {
        conv.messages(&conv_id)
            .get(1)
            .is_some_and(|m| status_of(m) == conv::MessageStatus::Stopped)
    })
    .await;
    let answer = &h.conv.messages(&conv_id)[1];
    assert!(answer.content.starts_with("Partial"));
    let limits = h.limits.clone();
    eventually(|| limits.0.lock().released.len() == 1).await;
    assert_eq!(h.limits.0.lock().in_flight, 0);
}

async fn attach(h: &Harness, generation_id: &str, after: u64) -> Vec<chat::ChatEvent> {
    collect(
        h.client
            .clone()
            .attach(h.req(chat::AttachRequest {
                generation_id: generation_id.into(),
                after_sequence: after,
            }))
            .await
            .expect("attach accepted")
            .into_inner(),
    )
    .await
}

async fn send_detached(h: &Harness, content: &str) -> tonic::Streaming<chat::ChatEvent> {
    h.send_req(chat::SendMessageRequest {
        content: content.into(),
        detach_on_disconnect: true,
        ..Default::default()
    })
    .await
}

/// The first event (Started) and the next one (a delta), then the client goes away.
async fn leave_after_first_delta(mut s: tonic::Streaming<chat::ChatEvent>) -> chat::ChatEvent {
    let first = s.next().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Started(_))));
    let e = s.next().await.unwrap().unwrap();
    assert!(matches!(e.event, Some(Event::Delta(_))));
    drop(s);
    first
}

#[tokio::test]
async fn detached_generation_completes_after_the_client_leaves_and_replays() {
    let h = Harness::start().await;
    let first = leave_after_first_delta(send_detached(&h, "[scenario:medium]").await).await;
    let (conv_id, gen_id) = (first.conversation_id.clone(), first.generation_id.clone());

    // It keeps running: stored COMPLETE with the whole answer, the upstream never cut.
    let conv = h.conv.clone();
    eventually(|| {
        conv.messages(&conv_id)
            .get(1)
            .is_some_and(|m| status_of(m) == conv::MessageStatus::Complete)
    })
    .await;
    let expected: String = (0..60).map(|i| format!("t{i} ")).collect();
    let stored = h.conv.messages(&conv_id)[1].clone();
    assert_eq!(stored.content, expected);
    assert_eq!(stored.generation_id, gen_id);
    assert_eq!(h.upstream.dropped(), 0);
    // Its quota was reconciled once, with the real tokens (answer 70 + title 33).
    let limits = h.limits.clone();
    eventually(|| limits.0.lock().released.len() == 1).await;
    assert_eq!(h.limits.0.lock().released, vec![70 + 33]);
    assert_eq!(h.limits.0.lock().in_flight, 0);

    // Re-attach from the start: every event, numbered without gaps, the whole text.
    let all = attach(&h, &gen_id, 0).await;
    assert_sequenced(&all);
    assert_eq!(text(&all), expected);
    let c = completed(&all);
    assert_eq!(c.finish_reason, chat::FinishReason::Stop as i32);
    assert_eq!(c.assistant_message_id, stored.id);
    // ... and from any sequence N: exactly the events after N.
    for n in [1, 2, all.len() as u64 / 2, all.len() as u64 - 1] {
        let tail = attach(&h, &gen_id, n).await;
        let seqs: Vec<u64> = tail.iter().map(|e| e.sequence).collect();
        let want: Vec<u64> = (n + 1..=all.len() as u64).collect();
        assert_eq!(seqs, want, "attach after {n}");
        assert_eq!(tail, all[n as usize..].to_vec());
    }
}

#[tokio::test]
async fn detached_regenerate_and_edit_survive_the_client_leaving() {
    let h = Harness::start().await;
    let evs = collect(h.send("first question").await).await;
    let conv_id = evs[0].conversation_id.clone();
    let user_id = started(&evs).user_message_id;
    let stream = h
        .client
        .clone()
        .edit_and_resend(h.req(chat::EditAndResendRequest {
            conversation_id: conv_id.clone(),
            message_id: user_id,
            content: "[scenario:medium] again".into(),
            detach_on_disconnect: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    leave_after_first_delta(stream).await;
    let stream = h
        .client
        .clone()
        .regenerate(h.req(chat::RegenerateRequest {
            conversation_id: conv_id.clone(),
            detach_on_disconnect: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    leave_after_first_delta(stream).await;
    let conv = h.conv.clone();
    let expected: String = (0..60).map(|i| format!("t{i} ")).collect();
    eventually(|| {
        let msgs = conv.messages(&conv_id);
        let live: Vec<_> = msgs.iter().filter(|m| !m.superseded).collect();
        live.len() == 2
            && status_of(live[1]) == conv::MessageStatus::Complete
            && live[1].content == expected
    })
    .await;
    // The edit's answer was superseded by the regenerated one, and was not cut either.
    let up = &h.upstream;
    eventually(|| up.rec.completed.load(std::sync::atomic::Ordering::SeqCst) >= 4).await;
    assert_eq!(h.upstream.dropped(), 0);
}

#[tokio::test]
async fn stop_cancels_a_detached_generation_and_detached_ones_are_bounded() {
    let h = Harness::start().await;
    let first = leave_after_first_delta(send_detached(&h, "[scenario:slow]").await).await;
    // The default bound is 3 per user (MAX_CONCURRENT_STREAMS): two more fit, a fourth not.
    let mut others = vec![];
    for _ in 0..2 {
        others.push(leave_after_first_delta(send_detached(&h, "[scenario:slow]").await).await);
    }
    let err = h
        .client
        .clone()
        .send_message(h.req(chat::SendMessageRequest {
            content: "[scenario:slow]".into(),
            detach_on_disconnect: true,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // A stream that is not detached is not counted against that bound.
    let mut plain = h.send("[scenario:normal]").await;
    while plain.next().await.is_some() {}

    let stopped = h
        .client
        .clone()
        .stop_generation(h.req(chat::StopGenerationRequest {
            generation_id: first.generation_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.stopped);
    let up = &h.upstream;
    eventually(|| up.dropped() == 1).await;
    let msgs = h.conv.messages(&first.conversation_id);
    assert_eq!(status_of(&msgs[1]), conv::MessageStatus::Stopped);
    assert!(msgs[1].content.starts_with("Partial"));
    let tail = attach(&h, &first.generation_id, 0).await;
    assert_eq!(
        completed(&tail).finish_reason,
        chat::FinishReason::Stopped as i32
    );

    // Its slot is free again.
    let mut s = send_detached(&h, "[scenario:normal]").await;
    while s.next().await.is_some() {}
    for g in others {
        h.client
            .clone()
            .stop_generation(h.req(chat::StopGenerationRequest {
                generation_id: g.generation_id,
            }))
            .await
            .unwrap();
    }
    eventually(|| up.dropped() == 3).await;
}

#[tokio::test]
async fn stop_generation_and_reattach() {
    let h = Harness::start().await;
    let mut s = h.send("[scenario:slow]").await;
    let first = s.next().await.unwrap().unwrap();
    let gen_id = first.generation_id.clone();
    let _ = s.next().await.unwrap().unwrap(); // a delta

    // Re-attach from sequence 1: replays what came after Started.
    let mut attached = h
        .client
        .clone()
        .attach(h.req(chat::AttachRequest {
            generation_id: gen_id.clone(),
            after_sequence: 1,
        }))
        .await
        .unwrap()
        .into_inner();
    let replay = attached.next().await.unwrap().unwrap();
    assert_eq!(replay.sequence, 2);
    assert!(matches!(replay.event, Some(Event::Delta(_))));

    // Another user cannot see or stop it.
    let stranger = Identity::user("someone-else");
    let err = h
        .client
        .clone()
        .stop_generation(stranger.request(chat::StopGenerationRequest {
            generation_id: gen_id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let stopped = h
        .client
        .clone()
        .stop_generation(h.req(chat::StopGenerationRequest {
            generation_id: gen_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.stopped);
    let rest = collect(s).await;
    let c = completed(&rest);
    assert_eq!(c.finish_reason, chat::FinishReason::Stopped as i32);
    let tail = collect(attached).await;
    assert!(matches!(
        tail.last().unwrap().event,
        Some(Event::Completed(_))
    ));
    let up = &h.upstream;
    eventually(|| up.dropped() == 1).await;
    let msgs = h.conv.messages(&first.conversation_id);
    assert_eq!(status_of(&msgs[1]), conv::MessageStatus::Stopped);
    assert!(msgs[1].content.starts_with("Partial"));

    // Stopping again: already finished.
    let again = h
        .client
        .clone()
        .stop_generation(h.req(chat::StopGenerationRequest {
            generation_id: gen_id,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.stopped);
}

#[tokio::test]
async fn images_go_upstream_as_image_parts_for_vision_models() {
    let h = Harness::start().await;
    h.files
        .add_image("img1", "cat.png", "data:image/png;base64,iVBORw0KGgo=");
    let evs = collect(
        h.send_req(chat::SendMessageRequest {
            content: "What is in this picture?".into(),
            file_ids: vec!["img1".into()],
            ..Default::default()
        })
        .await,
    )
    .await;
    completed(&evs);
    let req = &h.upstream.chat_requests()[0];
    let parts = req["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    assert_eq!(parts[0]["type"], "text");
    assert_eq!(parts[1]["type"], "image_url");
    assert_eq!(
        parts[1]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );
    let plan = started(&evs).context.unwrap();
    assert!(plan.files[0].sent_as_image);
    let user = &h.conv.messages(&evs[0].conversation_id)[0];
    assert_eq!(user.attachments[0].filename, "cat.png");
    assert!(user.attachments[0].is_image);
}

#[tokio::test]
async fn text_only_models_say_they_cannot_see_images() {
    let h = Harness::start().await;
    h.files
        .add_image("img1", "cat.png", "data:image/png;base64,iVBORw0KGgo=");
    let evs = collect(
        h.send_req(chat::SendMessageRequest {
            content: "What is in this picture?".into(),
            file_ids: vec!["img1".into()],
            model: "text-only-llm".into(),
            ..Default::default()
        })
        .await,
    )
    .await;
    completed(&evs);
    let answer = text(&evs);
    assert!(answer.contains("can't see images"), "{answer}");
    assert!(answer.contains("cat.png"));
    let req = &h.upstream.chat_requests()[0];
    let last = req["messages"].as_array().unwrap().last().unwrap().clone();
    assert!(last["content"].is_string(), "no image part: {last}");
    let plan = started(&evs).context.unwrap();
    assert!(!plan.files[0].sent_as_image);
    assert!(plan.notes.iter().any(|n| n.contains("cannot see images")));
}

#[tokio::test]
async fn attachments_are_planned_and_recorded() {
    let h = Harness::start().await;
    h.files.add_text(
        "doc1",
        "report.pdf",
        &[("Page 1", "Revenue grew 12%."), ("Page 2", "Costs fell.")],
    );
    let evs = collect(
        h.send_req(chat::SendMessageRequest {
            content: "Summarise".into(),
            file_ids: vec!["doc1".into()],
            ..Default::default()
        })
        .await,
    )
    .await;
    completed(&evs);
    let req = &h.upstream.chat_requests()[0];
    let user = req["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(user.contains("--- Attached file: report.pdf ---"));
    assert!(user.contains("## Page 2\nCosts fell."));
    let msgs = h.conv.messages(&evs[0].conversation_id);
    let plan = msgs[1].context.clone().unwrap();
    assert_eq!(plan.files[0].parts.len(), 2);
    assert!(plan.files[0].parts.iter().all(|p| p.included));

    // Unknown files are refused before anything is stored or reserved.
    let err = h
        .client
        .clone()
        .send_message(h.req(chat::SendMessageRequest {
            content: "x".into(),
            file_ids: vec!["nope".into()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(h.limits.0.lock().in_flight, 0);
}

#[tokio::test]
async fn regenerate_supersedes_and_edit_resends() {
    let h = Harness::start().await;
    let evs = collect(h.send("first question").await).await;
    let conv_id = evs[0].conversation_id.clone();
    let first_answer = started(&evs).assistant_message_id;

    let evs = collect(
        h.client
            .clone()
            .regenerate(h.req(chat::RegenerateRequest {
                conversation_id: conv_id.clone(),
                model: "gpt-4o-mini".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    completed(&evs);
    assert_eq!(started(&evs).model, "gpt-4o-mini");
    let msgs = h.conv.messages(&conv_id);
    assert_eq!(msgs.len(), 3);
    let old = msgs.iter().find(|m| m.id == first_answer).unwrap();
    assert!(old.superseded, "the old answer stays, superseded");
    assert!(!msgs[2].superseded);
    assert_eq!(msgs[2].parent_id, msgs[0].id);
    // Regenerate answered the same question without the old answer in its history.
    let req = h.upstream.chat_requests().last().unwrap().clone();
    assert_eq!(req["messages"].as_array().unwrap().len(), 1);

    let evs = collect(
        h.client
            .clone()
            .edit_and_resend(h.req(chat::EditAndResendRequest {
                conversation_id: conv_id.clone(),
                message_id: msgs[0].id.clone(),
                content: "edited question".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    completed(&evs);
    let msgs = h.conv.messages(&conv_id);
    let live: Vec<_> = msgs.iter().filter(|m| !m.superseded).collect();
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].content, "edited question");
    assert_eq!(live[0].parent_id, msgs[0].id);
    assert_eq!(msgs.len(), 5);

    // Nothing to regenerate in an unknown conversation.
    let err = h
        .client
        .clone()
        .regenerate(h.req(chat::RegenerateRequest {
            conversation_id: "missing".into(),
            model: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn send_simple_models_quota_and_refusals() {
    let h = Harness::start().await;
    let r = h
        .client
        .clone()
        .send_message_simple(h.req(chat::SendMessageRequest {
            content: "hi".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.assistant_message.unwrap().content, "Hello world!");
    assert_eq!(r.user_message.unwrap().content, "hi");
    assert_eq!(r.title, "Test Title");

    let err = h
        .client
        .clone()
        .send_message_simple(h.req(chat::SendMessageRequest {
            content: "[scenario:500]".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    let models = h
        .client
        .clone()
        .list_models(h.req(chat::ListModelsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .models;
    let default: Vec<_> = models.iter().filter(|m| m.is_default).collect();
    assert_eq!(default.len(), 1);
    assert_eq!(default[0].id, "gpt-4o");
    assert!(default[0].vision);
    let embedded = models.iter().find(|m| m.embedded).unwrap();
    assert_eq!(embedded.provider, "embedded");
    assert!(!embedded.vision);

    let q = h
        .client
        .clone()
        .get_quota(h.req(chat::GetQuotaRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.requests_remaining, 19);

    let err = h
        .client
        .clone()
        .send_message(h.req(chat::SendMessageRequest {
            content: "x".into(),
            model: "no-such-model".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = h
        .client
        .clone()
        .send_message(h.req(chat::SendMessageRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = h
        .client
        .clone()
        .send_message(tonic::Request::new(chat::SendMessageRequest {
            content: "x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    h.limits.0.lock().deny = true;
    let err = h
        .client
        .clone()
        .send_message(h.req(chat::SendMessageRequest {
            content: "x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        confab_common::error::retry_after_secs(&err),
        Some(42),
        "{err:?}"
    );
}

#[tokio::test]
async fn real_dependencies_as_separate_servers_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeUpstream::start().await;
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
    let deps = ChatDeps {
        conversation: remote("CONFAB_CONVERSATION_URL", &conv_url).unwrap(),
        files: remote("CONFAB_FILES_URL", &files_url).unwrap(),
        ratelimit: remote("CONFAB_RATELIMIT_URL", &rl_url).unwrap(),
    };
    let config = Config {
        openai: Some(openai_config(&upstream)),
        ..Config::default()
    };
    let addr = serve_chat(ChatServiceImpl::with_deps(config, deps).unwrap()).await;
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
    assert_sequenced(&evs);
    assert_eq!(text(&evs), "Hello world!");
    let mut store =
        confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient::new(
            confab_common::testing::connect(
                conv_url.trim_start_matches("http://").parse().unwrap(),
            )
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
    assert_eq!(status_of(&msgs[1]), conv::MessageStatus::Complete);
    assert_eq!(msgs[1].content, "Hello world!");
    let q = client
        .get_quota(user.request(chat::GetQuotaRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.streams_in_use, 0);
    assert_eq!(q.tokens_reserved, 0);
}
