//! The embedded SmolLM2 model end to end: a few tokens through the gRPC server.

use std::path::PathBuf;
use std::time::Duration;

use confab_chat::provider::ModelProvider;
use confab_chat::provider::embedded::{EmbeddedProvider, MODEL_ID};
use confab_chat::{ChatDeps, ChatServiceImpl, Config};
use confab_common::Identity;
use confab_common::channel::in_process;
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_event::Event;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::conversation::v1 as conv;
use tokio_stream::StreamExt;

use crate::fakes::{FakeConversation, FakeFiles, FakeLimits};

/// Fetches the model with the project's script (idempotent) into the shared cache.
pub fn model_path() -> PathBuf {
    let dir = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/confab/models");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .env("CONFAB_MODEL_DIR", &dir)
        .status()
        .expect("run scripts/fetch-model.sh");
    assert!(status.success(), "fetch-model.sh failed");
    dir.join(confab_chat::provider::embedded::MODEL_FILE)
}

#[tokio::test]
async fn embedded_model_answers_through_the_service() {
    let path = tokio::task::spawn_blocking(model_path).await.unwrap();
    let (conv, files, limits) = (
        FakeConversation::default(),
        FakeFiles::default(),
        FakeLimits::default(),
    );
    files.add_image("img1", "cat.png", "data:image/png;base64,iVBORw0KGgo=");
    let deps = ChatDeps {
        conversation: in_process(conv.server()),
        files: in_process(files.server()),
        ratelimit: in_process(limits.server()),
    };
    let config = Config {
        openai: None,
        model_path: path,
        embedded_sampling: false,
        ..Config::default()
    };
    let svc = ChatServiceImpl::with_deps(config, deps).unwrap();
    let addr = super::serve_chat(svc).await;
    let mut client = ChatServiceClient::new(confab_common::testing::connect(addr).await);
    let user = Identity::user("embedded-user");

    let models = client
        .list_models(user.request(chat::ListModelsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models.len(), 1);
    assert!(models[0].is_default && models[0].embedded);

    let mut s = client
        .send_message(user.request(chat::SendMessageRequest {
            content: "What is the capital of France? Answer in one word.".into(),
            file_ids: vec!["img1".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut evs = vec![];
    let mut deltas = 0;
    // A few tokens are enough: stop after 8 deltas (the rest would take CPU time).
    while let Some(e) = tokio::time::timeout(Duration::from_secs(300), s.next())
        .await
        .expect("embedded model stalled")
    {
        let e = e.unwrap();
        if matches!(e.event, Some(Event::Delta(_))) {
            deltas += 1;
        }
        let terminal = matches!(e.event, Some(Event::Completed(_) | Event::Failed(_)));
        evs.push(e);
        if terminal || deltas == 8 {
            break;
        }
    }
    let Some(Event::Started(started)) = &evs[0].event else {
        panic!("no Started: {evs:?}")
    };
    assert!(started.embedded_model);
    assert_eq!(started.provider, "embedded");
    assert_eq!(started.model, MODEL_ID);
    let text: String = evs
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Delta(d)) => Some(d.text.clone()),
            _ => None,
        })
        .collect();
    assert!(text.contains("can't see images"), "{text}");
    let note_len = text.find("\n\n").unwrap() + 2;
    assert!(text.len() > note_len, "the model said something: {text:?}");
    let conv_id = evs[0].conversation_id.clone();
    drop(s);
    // Either finished or stopped by our leaving; the stored answer has the text.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let msgs = conv.messages(&conv_id);
        let st = msgs[1].status;
        if st == conv::MessageStatus::Stopped as i32 || st == conv::MessageStatus::Complete as i32 {
            assert!(msgs[1].content.starts_with(&text[..note_len]));
            assert!(msgs[1].usage.unwrap().completion_tokens > 0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "answer not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn embedded_model_counts_with_its_own_tokenizer_and_stops_when_dropped() {
    let path = tokio::task::spawn_blocking(model_path).await.unwrap();
    let p = EmbeddedProvider::new(path).greedy();
    let before = p.count_tokens(MODEL_ID, "hello world");
    p.prepare(MODEL_ID).await.unwrap();
    let exact = p.count_tokens(MODEL_ID, "hello world");
    assert!((1..=4).contains(&exact), "{before} → {exact}");
    let mut s = p
        .stream(confab_chat::provider::ModelRequest {
            model: MODEL_ID.into(),
            messages: vec![confab_chat::provider::PromptMessage::text(
                confab_chat::provider::Role::User,
                "Count from one to fifty.",
            )],
            max_output_tokens: 4,
        })
        .await
        .unwrap();
    let mut n = 0;
    let mut finished = false;
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            confab_chat::provider::ModelEvent::Delta(_) => n += 1,
            confab_chat::provider::ModelEvent::Usage(u) => {
                assert!(u.completion_tokens <= 4);
                assert!(u.prompt_tokens > 5);
            }
            confab_chat::provider::ModelEvent::Finished(_) => finished = true,
        }
    }
    assert!(finished);
    assert!((1..=4).contains(&n));
}
