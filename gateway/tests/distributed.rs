//! The distributed wiring: the gateway binary and each service as its own process over
//! loopback (rate limit, files, conversation → files, chat → all three and a fake model),
//! one chat end to end through the gateway; then the chat process is killed, restarted
//! on the same port, and the next request through the gateway succeeds.
//!
//! The services run this test binary again with `CONFAB_DISTRIBUTED_ROLE=<service>`,
//! which calls exactly what each service's `main.rs` calls (`binary::main` with the
//! crate's `Config::from_env` and `run`): a test cannot depend on another package's
//! binaries being built and current. The gateway is the real `confab-gateway` binary.
//! `harness = false` so that such a child never starts the test itself.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{FakeOpenAi, WAIT, authed, session_at};
use confab_common::testing::{ChildGuard, spawn_service, test_output_dir, wait_serving};
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;

const ROLE: &str = "CONFAB_DISTRIBUTED_ROLE";
const TEST: &str = "distributed_wiring_survives_a_service_restart";

fn serve(role: &str) -> ! {
    use confab_common::binary::main;
    match role {
        "chat" => main(
            "confab-chat",
            50051,
            confab_chat::Config::from_env,
            confab_chat::run,
        ),
        "conversation" => main(
            "confab-conversation",
            50052,
            confab_conversation::Config::from_env,
            confab_conversation::run,
        ),
        "files" => main(
            "confab-files",
            50053,
            confab_files::Config::from_env,
            confab_files::run,
        ),
        "ratelimit" => main(
            "confab-ratelimit",
            50054,
            confab_ratelimit::Config::from_env,
            confab_ratelimit::run,
        ),
        other => {
            eprintln!("{ROLE}={other}: unknown service");
            std::process::exit(2)
        }
    }
}

/// Whether libtest-style arguments select this test (filters, `--skip`, `--exact`).
fn selected(args: &[String]) -> bool {
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let exact = args.iter().any(|a| a == "--exact");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--skip" {
            skips.extend(it.next().cloned());
        } else if let Some(s) = a.strip_prefix("--skip=") {
            skips.push(s.to_owned());
        } else if !a.starts_with('-') {
            filters.push(a.clone());
        }
    }
    let matches = |f: &String| {
        if exact {
            f == TEST
        } else {
            TEST.contains(f.as_str())
        }
    };
    (filters.is_empty() || filters.iter().any(matches)) && !skips.iter().any(matches)
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        serve(&role);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("{TEST}: test");
        }
        return;
    }
    if !selected(&args) {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 1 filtered out\n");
        return;
    }
    println!("\nrunning 1 test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(600), distributed_wiring())
            .await
            .expect("the distributed test took over 10 minutes")
    });
    println!("test {TEST} ... ok\n\ntest result: ok. 1 passed; 0 failed\n");
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Sends one message through the gateway; (conversation id, streamed text).
async fn chat_once(gateway: SocketAddr, token: &str, conversation_id: &str) -> (String, String) {
    let channel = confab_common::testing::connect(gateway).await;
    let mut stream = ChatServiceClient::new(channel)
        .send_message(authed(
            token,
            chat::SendMessageRequest {
                conversation_id: conversation_id.to_owned(),
                content: "Say hello".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("SendMessage through the gateway")
        .into_inner();
    let (mut id, mut text, mut completed) = (String::new(), String::new(), false);
    while let Some(ev) = stream.message().await.expect("chat stream") {
        if id.is_empty() {
            id = ev.conversation_id.clone();
        }
        match ev.event {
            Some(chat::chat_event::Event::Delta(d)) => text.push_str(&d.text),
            Some(chat::chat_event::Event::Completed(_)) => completed = true,
            Some(chat::chat_event::Event::Failed(f)) => panic!("chat failed: {f:?}"),
            _ => {}
        }
    }
    assert!(completed, "no Completed event; text so far {text:?}");
    (id, text)
}

async fn message_count(gateway: SocketAddr, token: &str, conversation_id: &str) -> usize {
    let channel = confab_common::testing::connect(gateway).await;
    ConversationServiceClient::new(channel)
        .list_messages(authed(
            token,
            conv::ListMessagesRequest {
                conversation_id: conversation_id.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect("ListMessages through the gateway")
        .into_inner()
        .messages
        .len()
}

async fn health(gateway: SocketAddr) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .get(format!("http://{gateway}/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /health");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

async fn wait_health(gateway: SocketAddr, want: u16) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = health(gateway).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health stayed {status}, wanted {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn distributed_wiring() {
    let openai = FakeOpenAi::start().await;
    let me = std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let role = |r: &str| (ROLE, r.to_owned());

    let (_ratelimit, ratelimit) = spawn_service(&me, &[role("ratelimit")]).await;
    let (_files, files) = spawn_service(&me, &[role("files")]).await;
    let (_conversation, conversation) = spawn_service(
        &me,
        &[role("conversation"), ("CONFAB_FILES_URL", url(files))],
    )
    .await;
    let chat_data = std::env::temp_dir().join(confab_common::testing::unique_name("confab-chat"));
    let chat_env = vec![
        role("chat"),
        ("CONFAB_CONVERSATION_URL", url(conversation)),
        ("CONFAB_FILES_URL", url(files)),
        ("CONFAB_RATELIMIT_URL", url(ratelimit)),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("OPENAI_BASE_URL", openai.base_url()),
        ("CONFAB_DATA_DIR", chat_data.to_string_lossy().into_owned()),
        ("LOG_FORMAT", "json".to_owned()),
    ];
    let (mut chat_proc, chat) = spawn_service(&me, &chat_env).await;
    let web = tempfile::tempdir().unwrap();
    let (_gateway, gateway) = spawn_service(
        env!("CARGO_BIN_EXE_confab-gateway"),
        &[
            ("CONFAB_CHAT_URL", url(chat)),
            ("CONFAB_CONVERSATION_URL", url(conversation)),
            ("CONFAB_FILES_URL", url(files)),
            ("CONFAB_RATELIMIT_URL", url(ratelimit)),
            (
                "CONFAB_SESSION_SECRET",
                "distributed-test-secret-0123456789abcdef".into(),
            ),
            ("CONFAB_WEB_DIR", web.path().to_string_lossy().into_owned()),
        ],
    )
    .await;

    // Every upstream is remote and serving.
    let body = wait_health(gateway, 200).await;
    for svc in ["chat", "conversation", "files", "ratelimit"] {
        assert_eq!(body["services"][svc]["mode"], "remote", "{body}");
        assert_eq!(body["services"][svc]["status"], "serving", "{body}");
    }

    // One chat end to end: gateway → chat → (ratelimit, conversation → files, model).
    let session = session_at(gateway, None).await;
    let (id, text) = chat_once(gateway, &session.token, "").await;
    assert!(!id.is_empty());
    assert_eq!(text, "Hello world!");
    assert_eq!(message_count(gateway, &session.token, &id).await, 2);

    // Kill the chat process; the gateway reports it; restart it on the same port.
    chat_proc.signal("KILL");
    assert!(
        chat_proc.wait_exit(WAIT).await.is_some(),
        "chat did not die"
    );
    let body = wait_health(gateway, 503).await;
    assert_ne!(body["services"]["chat"]["status"], "serving", "{body}");
    let log = test_output_dir().join(format!("confab-chat-restarted-{}.log", chat.port()));
    let _chat_proc = ChildGuard::spawn(&me, &["--addr", &chat.to_string()], &chat_env, log)
        .await
        .expect("restart chat");
    assert!(
        wait_serving(chat, "", WAIT).await,
        "restarted chat did not serve"
    );

    // The very next request through the gateway succeeds (no retry here).
    let (again, text) = chat_once(gateway, &session.token, &id).await;
    assert_eq!(again, id);
    assert_eq!(text, "Hello world!");
    assert_eq!(message_count(gateway, &session.token, &id).await, 4);
    wait_health(gateway, 200).await;
    let _ = std::fs::remove_dir_all(&chat_data);
}
