//! Chat against a real local OpenAI-compatible server: llama.cpp's Python server
//! (`llama-cpp-python[server]`, installed once into the shared cache by
//! scripts/install-llama-cpp-python.sh) serving the embedded model's GGUF, behind the real
//! conversation (SQLite), files (local) and rate-limit services.
//!
//! Covered: ListModels from the server's /v1/models, a streamed answer with the server's
//! usage, the title made after the answer by the answering model (a title request beside
//! the answer would cut it off: that server interrupts a running request by default), an
//! answer that reaches max tokens, and Stop ending the upstream request.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confab_chat::provider::openai::{OpenAiConfig, OpenAiProvider};
use confab_chat::provider::{Finish, ModelEvent, ModelProvider, ModelRequest, PromptMessage, Role};
use confab_chat::{ChatDeps, ChatServiceImpl, Config};
use confab_common::Identity;
use confab_common::channel::in_process;
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_event::Event;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::chat::v1::chat_service_server::ChatServiceServer;
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use tokio_stream::StreamExt;

const ALIAS: &str = "smollm2-local";
const WAIT: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project's scripts, run once per test process (both are idempotent and locked).
fn install() -> (PathBuf, PathBuf) {
    static PATHS: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    PATHS
        .get_or_init(|| {
            let dir = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join(".cache/confab/models");
            let status = Command::new("bash")
                .arg(repo().join("scripts/fetch-model.sh"))
                .env("CONFAB_MODEL_DIR", &dir)
                .status()
                .expect("run scripts/fetch-model.sh");
            assert!(status.success(), "fetch-model.sh failed");
            let out = Command::new("bash")
                .arg(repo().join("scripts/install-llama-cpp-python.sh"))
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/install-llama-cpp-python.sh");
            assert!(out.status.success(), "install-llama-cpp-python.sh failed");
            let python = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned();
            (
                PathBuf::from(python),
                dir.join(confab_chat::provider::embedded::MODEL_FILE),
            )
        })
        .clone()
}

/// A llama.cpp server on a free loopback port; killed when dropped.
struct LlamaServer {
    child: Child,
    base_url: String,
}

impl LlamaServer {
    async fn start(interrupt_requests: bool) -> Self {
        let (python, model) = tokio::task::spawn_blocking(install).await.unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = log_file(&format!("llama-server-{port}.log"));
        let child = Command::new(&python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
            .args(["--model_alias", ALIAS, "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            // One thread: the test shares the CPU, and llama.cpp's threads spin-wait.
            .args(["--n_ctx", "4096", "--n_threads", "1"])
            .args(["--interrupt_requests", &interrupt_requests.to_string()])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start llama_cpp.server");
        let server = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}/v1"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let ok = http
                .get(format!("{}/models", server.base_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break server;
            }
            assert!(Instant::now() < deadline, "llama_cpp.server did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn config(&self) -> OpenAiConfig {
        let mut c = OpenAiConfig::new("sk-local", Some(self.base_url.clone()));
        c.model = ALIAS.into();
        c.first_byte_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(60);
        c
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_file(name: &str) -> std::fs::File {
    let dir = std::env::var_os("CONFAB_TEST_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::File::create(Path::new(&dir).join(name)).unwrap()
}

struct App {
    client: ChatServiceClient<tonic::transport::Channel>,
    store: ConversationServiceClient<confab_common::channel::GrpcChannel>,
    user: Identity,
    _dir: tempfile::TempDir,
}

async fn app(upstream: &LlamaServer) -> App {
    let dir = tempfile::tempdir().unwrap();
    let conversation = in_process(
        confab_conversation::server(confab_conversation::Config::sqlite(dir.path()))
            .await
            .unwrap(),
    );
    let files = in_process(
        confab_files::server(confab_files::Config::local(dir.path().join("files")))
            .await
            .unwrap(),
    );
    let deps = ChatDeps {
        conversation: conversation.clone(),
        files,
        ratelimit: in_process(
            confab_ratelimit::server(confab_ratelimit::Config::default())
                .await
                .unwrap(),
        ),
    };
    let config = Config {
        openai: Some(upstream.config()),
        ..Config::default()
    };
    let svc = ChatServiceImpl::with_deps(config, deps).unwrap();
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
    App {
        client: ChatServiceClient::new(confab_common::testing::connect(addr).await),
        store: ConversationServiceClient::new(conversation),
        user: Identity::user(confab_common::testing::unique_name("llama")),
        _dir: dir,
    }
}

async fn next(s: &mut tonic::Streaming<chat::ChatEvent>) -> Option<chat::ChatEvent> {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("the answer stalled")
        .map(|e| e.unwrap())
}

#[tokio::test]
async fn streams_titles_after_the_answer_and_lists_the_servers_models() {
    // The server's default: a second request interrupts the running one.
    let upstream = LlamaServer::start(true).await;
    let mut app = app(&upstream).await;

    // ListModels is the server's /v1/models (fetched in the background), not OpenAI's names.
    let deadline = Instant::now() + Duration::from_secs(30);
    let models = loop {
        let models = app
            .client
            .list_models(app.user.request(chat::ListModelsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .models;
        if models.iter().any(|m| m.id == ALIAS) {
            break models;
        }
        assert!(
            Instant::now() < deadline,
            "never listed {ALIAS}: {models:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert!(!ids.contains(&"gpt-4o-mini"), "{ids:?}");
    let compatible: Vec<_> = models.iter().filter(|m| !m.embedded).collect();
    assert_eq!(compatible.len(), 1, "{models:?}");
    assert!(compatible[0].is_default && compatible[0].provider == "openai-compatible");

    let mut s = app
        .client
        .send_message(app.user.request(chat::SendMessageRequest {
            content: "What is the capital of France? Answer in one short sentence.".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let (mut deltas, mut text, mut completed, mut title) = (0, String::new(), None, None);
    let mut conversation_id = String::new();
    while let Some(e) = next(&mut s).await {
        conversation_id.clone_from(&e.conversation_id);
        match e.event {
            Some(Event::Delta(d)) => {
                assert!(completed.is_none(), "a delta after Completed");
                deltas += 1;
                text.push_str(&d.text);
            }
            Some(Event::TitleUpdated(t)) => title = Some(t.title),
            Some(Event::Completed(c)) => completed = Some(c),
            Some(Event::Failed(f)) => panic!("failed: {f:?}"),
            _ => {}
        }
    }
    let completed = completed.expect("Completed");
    assert!(!text.trim().is_empty(), "an empty answer");
    assert!(deltas >= 2, "not streamed: {deltas} delta(s) for {text:?}");
    assert_eq!(completed.finish_reason, chat::FinishReason::Stop as i32);
    let usage = completed.usage.unwrap();
    assert!(
        usage.prompt_tokens > 10 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    let title = title.expect("TitleUpdated");
    assert!(!title.trim().is_empty());

    // Stored: the whole answer (not cut off by the title request) and the model's title.
    let msgs = app
        .store
        .list_messages(app.user.request(conv::ListMessagesRequest {
            conversation_id: conversation_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .messages;
    let answer = msgs.last().unwrap();
    assert_eq!(answer.status, conv::MessageStatus::Complete as i32);
    assert_eq!(answer.content, text);
    let c = app
        .store
        .get_conversation(
            app.user
                .request(conv::GetConversationRequest { conversation_id }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.title, title);
    assert_ne!(
        title,
        confab_chat::service::heuristic_title(
            "What is the capital of France? Answer in one short sentence."
        ),
        "the title came from the first words, not the model"
    );

    // An answer that reaches max tokens: the server says "length" after one chunk per
    // token (it sends no usage; chat counts the tokens itself, as seen above).
    let provider = OpenAiProvider::new(upstream.config()).unwrap();
    let mut s = provider
        .stream(ModelRequest {
            model: ALIAS.into(),
            messages: vec![PromptMessage::text(
                Role::User,
                "Write a long story about a lighthouse keeper.",
            )],
            max_output_tokens: 12,
        })
        .await
        .unwrap();
    let (mut finish, mut pieces) = (None, 0);
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            ModelEvent::Finished(f) => finish = Some(f),
            ModelEvent::Delta(_) => pieces += 1,
            _ => {}
        }
    }
    assert_eq!(finish, Some(Finish::Length));
    assert!((1..=12).contains(&pieces), "{pieces} pieces");
}

#[tokio::test]
async fn stop_ends_the_upstream_request() {
    // One request at a time, no interruption: a request the server still runs would hold
    // the next one back until it finished.
    let upstream = LlamaServer::start(false).await;
    let mut app = app(&upstream).await;
    let mut s = app
        .client
        .send_message(app.user.request(chat::SendMessageRequest {
            content: "Write a very long, detailed essay about the history of Rome, with at least thirty paragraphs.".into(),
            model: ALIAS.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut generation_id = String::new();
    let mut deltas = 0;
    while let Some(e) = next(&mut s).await {
        generation_id.clone_from(&e.generation_id);
        if matches!(e.event, Some(Event::Delta(_))) {
            deltas += 1;
            if deltas == 3 {
                break;
            }
        }
        assert!(!matches!(
            e.event,
            Some(Event::Completed(_) | Event::Failed(_))
        ));
    }
    let stopped = app
        .client
        .stop_generation(app.user.request(chat::StopGenerationRequest {
            generation_id: generation_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(stopped.stopped);
    let mut finish = None;
    while let Some(e) = next(&mut s).await {
        if let Some(Event::Completed(c)) = e.event {
            finish = Some(c.finish_reason);
        }
    }
    assert_eq!(finish, Some(chat::FinishReason::Stopped as i32));

    // The server is free at once: the essay (up to 2048 tokens) is not still being written.
    let t0 = Instant::now();
    let provider = OpenAiProvider::new(upstream.config()).unwrap();
    let mut s = provider
        .stream(ModelRequest {
            model: ALIAS.into(),
            messages: vec![PromptMessage::text(Role::User, "Say hi.")],
            max_output_tokens: 4,
        })
        .await
        .unwrap();
    let mut first = None;
    while let Some(ev) = s.next().await {
        ev.unwrap();
        first.get_or_insert_with(Instant::now);
    }
    let waited = first.unwrap() - t0;
    assert!(
        waited < Duration::from_secs(4),
        "the next request waited {waited:?}: the stopped one kept running upstream"
    );
}
