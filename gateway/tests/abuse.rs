//! Attacks from one script on one address, each against a real gateway: the gateway
//! stays up, another user's calls and streams are unaffected, and nothing stored is
//! lost. Session minting and request budgets are decided by a rate-limit service shared
//! by two gateway replicas; stalled HTTP/2 clients (a raw `h2` client advertising a
//! zero window) run against a gateway whose chat service is remote, over real HTTP/2.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use confab_common::testing::local_listener;
use confab_common::{Shutdown, channel};
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use confab_proto::service_names;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::service::Routes;

/// Rate limits for a test: generous model-call quotas, the given class budgets.
fn ratelimit_config(writes: u32, sessions: u32) -> confab_ratelimit::Config {
    confab_ratelimit::Config {
        limits: confab_ratelimit::Limits {
            requests_per_minute: 100_000,
            max_streams: 1_000,
            daily_tokens: 1_000_000_000,
            writes: confab_ratelimit::Budget::per_minute(writes),
            sessions: confab_ratelimit::Budget {
                limit: sessions,
                period: Duration::from_secs(3600),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The four services behind one real gRPC port (what a remote deployment looks like to
/// the gateway): rate limits, files, conversations and chat with the fake model.
struct Backend {
    url: String,
    openai: FakeOpenAi,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Backend {
    async fn start(limits: confab_ratelimit::Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let openai = FakeOpenAi::start().await;
        let rl = confab_ratelimit::server(limits).await.unwrap();
        let files = confab_files::server(confab_files::Config::local(dir.path()))
            .await
            .unwrap();
        let conversation = confab_conversation::server_with_files(
            confab_conversation::Config::sqlite(dir.path()),
            Some(channel::in_process(files.clone())),
        )
        .await
        .unwrap();
        let chat = confab_chat::server(
            chat_config(&openai, dir.path()),
            confab_chat::ChatDeps {
                conversation: channel::in_process(conversation.clone()),
                files: channel::in_process(files.clone()),
                ratelimit: channel::in_process(rl.clone()),
            },
        )
        .unwrap();
        let routes = Routes::new(rl)
            .add_service(files)
            .add_service(conversation)
            .add_service(chat);
        let server = confab_common::server::GrpcServer::new(
            routes,
            &[
                service_names::RATELIMIT,
                service_names::FILES,
                service_names::CONVERSATION,
                service_names::CHAT,
            ],
        )
        .await
        .unwrap();
        let (listener, addr) = local_listener().await;
        let shutdown = Shutdown::new();
        tokio::spawn(server.serve(listener, shutdown.clone(), Duration::from_secs(1)));
        Self {
            url: format!("http://{addr}"),
            openai,
            shutdown,
            _dir: dir,
        }
    }

    /// A gateway replica in front of these services.
    async fn gateway(&self, customize: impl FnOnce(&mut confab_gateway::EdgeConfig)) -> Gw {
        let url = self.url.clone();
        Gw::start_with(customize, move |u| {
            u.chat = Some(url.clone());
            u.conversation = Some(url.clone());
            u.files = Some(url.clone());
            u.ratelimit = Some(url);
        })
        .await
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn post_session(addr: SocketAddr, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(format!("http://{addr}/auth/session"));
    if let Some(f) = forwarded_for {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.unwrap()
}

async fn healthy(gw: &Gw) -> bool {
    reqwest::get(gw.url("/health"))
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// One whole answer for `token`: its text (joined deltas) and conversation id.
async fn chat_once(gw: &Gw, token: &str, content: &str) -> (String, String) {
    let mut stream = ChatServiceClient::new(gw.channel().await)
        .send_message(authed(
            token,
            chat::SendMessageRequest {
                content: content.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("send accepted")
        .into_inner();
    let (mut text, mut conversation) = (String::new(), String::new());
    while let Some(e) = stream.message().await.expect("stream ok") {
        if conversation.is_empty() {
            conversation = e.conversation_id.clone();
        }
        if let Some(chat::chat_event::Event::Delta(d)) = e.event {
            text.push_str(&d.text);
        }
    }
    (text, conversation)
}

/// 300 anonymous sessions from one address, spread over two gateway replicas: the
/// shared budget admits exactly its limit, then 429 with Retry-After and the numbers.
/// A renewal is not a new session; other addresses (IPv6 per /64) are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_minting_is_limited_per_address_across_replicas() {
    let backend = Backend::start(ratelimit_config(1000, 10)).await;
    let a = backend.gateway(|e| e.trusted_proxy_hops = 1).await;
    let b = backend.gateway(|e| e.trusted_proxy_hops = 1).await;
    let attacker = "203.0.113.66";
    let (mut ok, mut refused, mut first_token) = (0, 0, None);
    for i in 0..300 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = post_session(gw.addr, Some(attacker)).await;
        match r.status().as_u16() {
            200 => {
                ok += 1;
                let s: serde_json::Value = r.json().await.unwrap();
                first_token.get_or_insert(s["token"].as_str().unwrap().to_owned());
            }
            429 => {
                refused += 1;
                let retry: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=360).contains(&retry), "retry-after {retry}");
                let body: serde_json::Value = r.json().await.unwrap();
                let msg = body["error"].as_str().unwrap();
                assert!(msg.contains("at most 10 per hour"), "{msg}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, refused), (10, 290), "both replicas share one budget");

    // Renewing an existing session is not minting.
    let renewed = reqwest::Client::new()
        .post(a.url("/auth/session"))
        .header("x-forwarded-for", attacker)
        .bearer_auth(first_token.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status(), 200);

    // IPv6: one /64 is one budget, whatever the interface id; the next /64 is another.
    for i in 0..10 {
        let r = post_session(b.addr, Some(&format!("2001:db8:5:6::{i:x}"))).await;
        assert_eq!(r.status(), 200);
    }
    let r = post_session(a.addr, Some("2001:db8:5:6:ffff:1:2:3")).await;
    assert_eq!(r.status(), 429, "same /64");
    let r = post_session(a.addr, Some("2001:db8:5:7::1")).await;
    assert_eq!(r.status(), 200, "another /64");
    // Someone else entirely still gets in, and the gateways are healthy.
    assert_eq!(
        post_session(a.addr, Some("198.51.100.1")).await.status(),
        200
    );
    assert!(healthy(&a).await && healthy(&b).await);
}

/// A script hammering a write RPC spends its own write budget: RESOURCE_EXHAUSTED with
/// retry-after metadata and the numbers; its reads still work; another user is
/// unaffected; everything it created before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_budgets_answer_resource_exhausted_with_retry_after() {
    let backend = Backend::start(ratelimit_config(5, 100)).await;
    let gw = backend.gateway(|_| {}).await;
    // Signed-in users are budgeted per user (anonymous ones per address).
    let keys = confab_gateway::auth::SessionKeys::new(gw.secret.clone(), Duration::from_secs(600));
    let attacker = keys.issue("mallory", false, None);
    let victim = keys.issue("alice", false, None);
    let mut client = ConversationServiceClient::new(gw.channel().await);
    let create = |token: &str, title: &str| {
        authed(
            token,
            conv::CreateConversationRequest {
                title: title.into(),
                ..Default::default()
            },
        )
    };
    let mut created = Vec::new();
    let mut exhausted = None;
    for i in 0..50 {
        match client
            .create_conversation(create(&attacker.token, &format!("c{i}")))
            .await
        {
            Ok(r) => created.push(r.into_inner().id),
            Err(e) => {
                exhausted.get_or_insert(e);
            }
        }
    }
    assert_eq!(created.len(), 5);
    let e = exhausted.expect("refused past the budget");
    assert_eq!(e.code(), Code::ResourceExhausted);
    let retry = confab_common::error::retry_after_secs(&e).expect("retry-after metadata");
    assert!((1..=12).contains(&retry), "one write every 12 s: {retry}");
    assert!(
        e.message().contains("at most 5 per minute") && e.message().contains("try again in"),
        "{}",
        e.message()
    );
    // Reads are a separate budget, and nothing created was lost.
    let listed = client
        .list_conversations(authed(
            &attacker.token,
            conv::ListConversationsRequest::default(),
        ))
        .await
        .expect("reads still admitted")
        .into_inner();
    assert_eq!(listed.conversations.len(), 5);
    // Another user writes as usual.
    client
        .create_conversation(create(&victim.token, "mine"))
        .await
        .expect("another user's write");
    // grpc-web callers see the same refusal, with retry-after readable by the browser.
    let (status, headers, body) = grpc_web_call(
        gw.addr,
        "/confab.conversation.v1.ConversationService/CreateConversation",
        &conv::CreateConversationRequest::default(),
        &[(
            "authorization",
            format!("Bearer {}", attacker.token).as_str(),
        )],
        false,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        grpc_web_status(&headers, &body),
        Some(Code::ResourceExhausted as i32)
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(healthy(&gw).await);
}

fn grpc_frame(msg: &impl prost::Message) -> bytes::Bytes {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// A raw HTTP/2 client that opens `streams` slow answers and never reads them, with a
/// zero flow-control window: returns when the gateway has closed its connection.
async fn zero_window_attack(addr: SocketAddr, token: &str, streams: usize) -> Duration {
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut pending = Vec::new();
    for i in 0..streams {
        let mut ready = match client.clone().ready().await {
            Ok(c) => c,
            Err(_) => break,
        };
        let req = http::Request::post(format!(
            "http://{addr}/confab.chat.v1.ChatService/SendMessage"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
        let Ok((response, mut send)) = ready.send_request(req, false) else {
            break;
        };
        let msg = chat::SendMessageRequest {
            content: format!("[slow] flood {i}"),
            ..Default::default()
        };
        if send.send_data(grpc_frame(&msg), true).is_err() {
            break;
        }
        // Headers arrive (they are not flow-controlled); the body is never read.
        pending.push(tokio::spawn(
            async move { response.await.map(|r| r.status()) },
        ));
    }
    for p in pending {
        let _ = p.await;
    }
    tokio::time::timeout(WAIT, connection)
        .await
        .expect("the gateway closes a connection that stopped reading")
        .ok();
    started.elapsed()
}

/// Many zero-window streams from one client while another user streams normally: the
/// stalled client's own connection is closed once its per-stream buffer is full; the
/// shared gateway→chat connection is never reset, so the other user's answers arrive
/// whole, and they are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_client_loses_only_its_own_streams() {
    let backend = Backend::start(ratelimit_config(1000, 100)).await;
    let gw = backend
        .gateway(|e| e.limits.stream_buffer_bytes = 4096)
        .await;
    let attacker = gw.session(None).await;
    let victim = gw.session(None).await;

    let attack = tokio::spawn({
        let addr = gw.addr;
        let token = attacker.token.clone();
        async move { zero_window_attack(addr, &token, 40).await }
    });
    // While the attack runs, the other user chats turn after turn.
    let mut conversations = Vec::new();
    let mut worst = Duration::ZERO;
    while !attack.is_finished() && conversations.len() < 40 {
        let t = Instant::now();
        let (text, id) = tokio::time::timeout(WAIT, chat_once(&gw, &victim.token, "Say hello"))
            .await
            .expect("the other user's answer arrives");
        worst = worst.max(t.elapsed());
        assert_eq!(text, "Hello world!");
        conversations.push(id);
    }
    let closed_after = attack.await.unwrap();
    assert!(
        !conversations.is_empty(),
        "the victim chatted during the attack"
    );
    eprintln!(
        "attacker's connection closed after {closed_after:?}; victim: {} answers, slowest {worst:?}",
        conversations.len()
    );
    assert!(closed_after < Duration::from_secs(45), "{closed_after:?}");
    // Nothing the other user was told is lost.
    let mut client = ConversationServiceClient::new(gw.channel().await);
    for id in &conversations {
        let msgs = client
            .list_messages(authed(
                &victim.token,
                conv::ListMessagesRequest {
                    conversation_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .messages;
        let answer = msgs.iter().rev().find(|m| !m.content.is_empty()).unwrap();
        assert_eq!(answer.content, "Hello world!");
    }
    // Still serving, and the model streams the attacker started were not left running.
    assert!(healthy(&gw).await);
    let (text, _) = chat_once(&gw, &victim.token, "Say hello").await;
    assert_eq!(text, "Hello world!");
    assert!(
        backend
            .openai
            .stats
            .started
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
}

/// Slow bodies, idle connections and connection floods are cut off by the edge, and a
/// client on another address is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_idle_connections_and_connection_floods_are_cut_off() {
    let gw = Gw::start(|e| {
        e.limits.body_read_timeout = Duration::from_secs(1);
        e.limits.idle_timeout = Duration::from_secs(2);
        e.limits.header_read_timeout = Duration::from_secs(2);
        e.limits.max_connections_per_addr = 8;
    })
    .await;
    let victim = gw.session(None).await;

    // A body that never finishes: DEADLINE_EXCEEDED after the body timeout.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /confab.conversation.v1.ConversationService/ListConversations HTTP/1.1\r\n\
             host: x\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
             authorization: Bearer {}\r\ncontent-length: 100\r\n\r\n\0\0\0",
            victim.token
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.contains("grpc-status: 4"), "{head}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // An HTTP/2 connection left idle after a request is closed after the idle timeout.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("http://{}/health", gw.addr))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), connection)
        .await
        .expect("idle connection closed")
        .ok();
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // A flood of connections from one address: past the cap they are closed at once.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("refused connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Another address (127.0.0.2 is loopback too) is served meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let other = socket.connect(gw.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(other).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("http://{}/health", gw.addr))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    drop(held);
    assert!(healthy(&gw).await);
}

/// Client-supplied numbers (absurd deadlines) cannot make the gateway panic: each call
/// gets a gRPC status (OK, or DEADLINE_EXCEEDED for a zero deadline).
#[tokio::test]
async fn absurd_client_numbers_are_harmless() {
    let gw = Gw::start(|_| {}).await;
    let s = gw.session(None).await;
    let auth = format!("Bearer {}", s.token);
    for timeout in [
        "99999999H",
        "99999999n",
        "0m",
        "1S",
        "x",
        "999999999999999999S",
        "-5S",
    ] {
        let (status, headers, body) = grpc_web_call(
            gw.addr,
            "/confab.conversation.v1.ConversationService/ListConversations",
            &conv::ListConversationsRequest::default(),
            &[("authorization", auth.as_str()), ("grpc-timeout", timeout)],
            false,
        )
        .await;
        assert_eq!(status, 200, "{timeout}");
        let code = grpc_web_status(&headers, &body);
        assert!(
            code == Some(Code::Ok as i32) || code == Some(Code::DeadlineExceeded as i32),
            "{timeout}: {code:?}"
        );
    }
    assert!(healthy(&gw).await);
}

/// What the gateway serves for the browser carries the security headers; `/health` shows
/// no internal addresses; `/metrics` is not public.
#[tokio::test]
async fn security_headers_private_metrics_and_a_health_without_addresses() {
    let backend = Backend::start(ratelimit_config(1000, 100)).await;
    let gw = backend
        .gateway(|e| {
            e.metrics_token = Some("abuse-metrics-token-0123".into());
        })
        .await;
    std::fs::create_dir_all(gw.dir.path().join("web")).unwrap();
    std::fs::write(
        gw.dir.path().join("web/index.html"),
        "<!doctype html><script>window.x=1</script><script type=\"module\">import('./a.js')</script>",
    )
    .unwrap();
    // The CSP is computed when the gateway starts: start one that sees the file.
    let gw2 = {
        let web = gw.dir.path().join("web");
        backend.gateway(move |e| e.web_dir = web).await
    };
    let r = reqwest::get(gw2.url("/")).await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    for want in [
        "default-src 'self'",
        "'wasm-unsafe-eval'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "'sha256-",
    ] {
        assert!(csp.contains(want), "{want} missing from {csp}");
    }
    assert!(!csp.contains("'unsafe-eval'") && !csp.contains("script-src 'self' 'unsafe-inline'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let session = reqwest::Client::new()
        .post(gw2.url("/auth/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(session.headers()["x-content-type-options"], "nosniff");

    let health = reqwest::get(gw.url("/health"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(health.contains("\"remote\""), "{health}");
    assert!(
        !health.contains("127.0.0.1") && !health.contains("http://"),
        "{health}"
    );

    assert_eq!(
        reqwest::get(gw.url("/metrics")).await.unwrap().status(),
        404
    );
    assert_eq!(
        reqwest::get(gw2.url("/metrics")).await.unwrap().status(),
        404
    );
    let m = reqwest::Client::new()
        .get(gw.url("/metrics"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 404);
    let m = reqwest::Client::new()
        .get(gw.url("/metrics"))
        .bearer_auth("abuse-metrics-token-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("confab_rpc_requests"));
}

/// `/metrics` on its own listener (`CONFAB_METRICS_ADDR`), not on the public port.
#[tokio::test]
async fn metrics_have_their_own_listener() {
    let port = confab_common::testing::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let gw = Gw::start(move |e| e.metrics_addr = Some(addr)).await;
    assert_eq!(
        reqwest::get(gw.url("/metrics")).await.unwrap().status(),
        404
    );
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("confab_rpc_requests"), "{text}");
}
