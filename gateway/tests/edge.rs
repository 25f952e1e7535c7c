//! The gateway as the browser and operators see it: the whole product in one process
//! (real chat, conversation, files, ratelimit; a fake model), reached over grpc-web
//! (buf curl and raw HTTP/1.1), native gRPC (h2c) and plain HTTP.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use confab_gateway::auth::{SessionKeys, now_ms};
use confab_gateway::config::{CorsOrigins, JwksSource, OidcConfig};
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_service_client::ChatServiceClient;
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use confab_proto::files::v1 as files;
use confab_proto::files::v1::file_service_client::FileServiceClient;
use confab_proto::ratelimit::v1 as rl;
use confab_proto::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

async fn wait_until(mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn buf_curl_streams_a_chat_answer_over_grpc_web() {
    let gw = Gw::start(|_| {}).await;
    let s = gw.session(None).await;
    let schema = schema_file(gw.dir.path());
    let (ok, out, err) = buf_curl(
        &schema,
        &gw.url("/confab.chat.v1.ChatService/SendMessage"),
        &s.token,
        r#"{"content":"Say hello"}"#,
    )
    .await;
    assert!(ok, "buf curl failed: {err}\n{out}");
    // One JSON object per event: started, the answer's deltas (tokens arriving within a
    // display frame travel together), usage, completed.
    assert!(out.contains("\"started\""), "{out}");
    let answer: String = out
        .split("\"text\": \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(answer, "Hello world!", "{out}");
    assert!(out.contains("\"completed\""), "{out}");

    // Unary through the same client; and without a token: UNAUTHENTICATED.
    let (ok, out, err) = buf_curl(
        &schema,
        &gw.url("/confab.chat.v1.ChatService/ListModels"),
        &s.token,
        "{}",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("gpt-4o"), "{out}");
    let (ok, _, err) = buf_curl(
        &schema,
        &gw.url("/confab.chat.v1.ChatService/ListModels"),
        "cs1.forged.token",
        "{}",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("unauthenticated"), "{err}");
}

#[tokio::test]
async fn grpc_web_binary_and_text_and_missing_credentials() {
    let gw = Gw::start(|_| {}).await;
    let s = gw.session(None).await;
    let bearer = format!("Bearer {}", s.token);
    let path = "/confab.chat.v1.ChatService/ListModels";
    for text in [false, true] {
        let (status, headers, body) = grpc_web_call(
            gw.addr,
            path,
            &chat::ListModelsRequest {},
            &[("authorization", &bearer)],
            text,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(grpc_web_status(&headers, &body), Some(0), "text={text}");
        assert!(String::from_utf8_lossy(&body).contains("gpt-4o"));
    }
    let (status, headers, body) =
        grpc_web_call(gw.addr, path, &chat::ListModelsRequest {}, &[], false).await;
    assert_eq!(status, 200);
    assert_eq!(
        grpc_web_status(&headers, &body),
        Some(Code::Unauthenticated as i32)
    );
}

#[tokio::test]
async fn sessions_are_issued_refreshed_and_verified() {
    let gw = Gw::start(|_| {}).await;
    let a = gw.session(None).await;
    assert!(a.user_id.starts_with("anon-"));
    assert!(a.expires_at_ms > now_ms());
    // Refresh keeps the user; a bad bearer gets a new anonymous user.
    let again = gw.session(Some(&a.token)).await;
    assert_eq!(again.user_id, a.user_id);
    let other = gw.session(Some("cs1.nonsense.sig")).await;
    assert_ne!(other.user_id, a.user_id);

    let mut client = ConversationServiceClient::new(gw.channel().await);
    let list = |token: &str| authed(token, conv::ListConversationsRequest::default());
    client
        .list_conversations(list(&a.token))
        .await
        .expect("valid token");

    let keys = SessionKeys::new(gw.secret.clone(), Duration::from_secs(60));
    let expired = keys.issue(&a.user_id, true, Some(now_ms() - 1_000));
    let forged = SessionKeys::new(
        b"another-secret-another-secret-1234".to_vec(),
        Duration::from_secs(60),
    )
    .issue(&a.user_id, false, None);
    let mut tampered = a.token.clone();
    tampered.insert(6, 'x');
    for bad in [
        expired.token.as_str(),
        forged.token.as_str(),
        tampered.as_str(),
        "garbage",
    ] {
        let e = client.list_conversations(list(bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bad}: {e:?}");
    }
    let e = client
        .list_conversations(conv::ListConversationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn users_cannot_reach_each_others_data_even_by_spoofing_identity() {
    let gw = Gw::start(|_| {}).await;
    let a = gw.session(None).await;
    let b = gw.session(None).await;
    let mut convs = ConversationServiceClient::new(gw.channel().await);
    let c = convs
        .create_conversation(authed(
            &a.token,
            conv::CreateConversationRequest {
                title: "A's secrets".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let get = |token: &str| {
        authed(
            token,
            conv::GetConversationRequest {
                conversation_id: c.id.clone(),
            },
        )
    };
    convs
        .get_conversation(get(&a.token))
        .await
        .expect("owner reads");
    let e = convs.get_conversation(get(&b.token)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // B claims to be A through the identity metadata: stripped, still B.
    let mut spoofed = get(&b.token);
    spoofed
        .metadata_mut()
        .insert("x-confab-user", a.user_id.parse().unwrap());
    spoofed
        .metadata_mut()
        .insert("x-confab-anonymous", "0".parse().unwrap());
    let e = convs.get_conversation(spoofed).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // A spoofed identity with no token at all is not an identity.
    let mut no_token = tonic::Request::new(conv::GetConversationRequest {
        conversation_id: c.id.clone(),
    });
    no_token
        .metadata_mut()
        .insert("x-confab-user", a.user_id.parse().unwrap());
    assert_eq!(
        convs.get_conversation(no_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Files: A uploads, B cannot see it.
    let mut fs = FileServiceClient::new(gw.channel().await);
    let data = b"hello from A\n".to_vec();
    let up = fs
        .start_upload(authed(
            &a.token,
            files::StartUploadRequest {
                filename: "a.txt".into(),
                declared_size: data.len() as u64,
                declared_content_type: "text/plain".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    fs.upload_chunk(authed(
        &a.token,
        files::UploadChunkRequest {
            upload_id: up.upload_id.clone(),
            offset: 0,
            data,
        },
    ))
    .await
    .unwrap();
    let file = fs
        .finish_upload(authed(
            &a.token,
            files::FinishUploadRequest {
                upload_id: up.upload_id,
                sha256: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .file
        .unwrap();
    let get_file = |token: &str| {
        authed(
            token,
            files::GetFileRequest {
                file_id: file.id.clone(),
            },
        )
    };
    fs.get_file(get_file(&a.token))
        .await
        .expect("owner reads file");
    assert_eq!(
        fs.get_file(get_file(&b.token)).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn internal_rpcs_and_the_rate_limit_service_are_unreachable() {
    let gw = Gw::start(|_| {}).await;
    let s = gw.session(None).await;
    let ch = gw.channel().await;
    let e = ConversationServiceClient::new(ch.clone())
        .append_message(authed(&s.token, conv::AppendMessageRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = FileServiceClient::new(ch.clone())
        .get_prompt_parts(authed(&s.token, files::GetPromptPartsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = FileServiceClient::new(ch.clone())
        .release_files(authed(&s.token, files::ReleaseFilesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = RateLimitServiceClient::new(ch.clone())
        .acquire(authed(&s.token, rl::AcquireRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Over grpc-web too.
    let (_, headers, body) = grpc_web_call(
        gw.addr,
        "/confab.conversation.v1.ConversationService/UpdateMessage",
        &conv::UpdateMessageRequest::default(),
        &[("authorization", &format!("Bearer {}", s.token))],
        false,
    )
    .await;
    assert_eq!(
        grpc_web_status(&headers, &body),
        Some(Code::PermissionDenied as i32)
    );
}

#[tokio::test]
async fn cors_preflight_allows_listed_origins_only() {
    let gw = Gw::start(|e| {
        e.cors = CorsOrigins::List(vec!["https://app.example".into()]);
    })
    .await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(
                reqwest::Method::OPTIONS,
                gw.url("/confab.chat.v1.ChatService/SendMessage"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent,authorization",
            )
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for needed in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
    ] {
        assert!(allowed.contains(needed), "{allowed}");
    }
    assert!(h.contains_key("access-control-max-age"));
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    // The actual call exposes the grpc status headers to the page.
    let s = gw.session(None).await;
    let (_, headers, _) = grpc_web_call(
        gw.addr,
        "/confab.chat.v1.ChatService/ListModels",
        &chat::ListModelsRequest {},
        &[
            ("authorization", &format!("Bearer {}", s.token)),
            ("origin", "https://app.example"),
        ],
        false,
    )
    .await;
    let exposed = headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"));
}

#[tokio::test]
async fn oversize_messages_are_refused() {
    let gw = Gw::start(|e| e.limits.max_message_bytes = 1024).await;
    let s = gw.session(None).await;
    let e = ChatServiceClient::new(gw.channel().await)
        .send_message(authed(
            &s.token,
            chat::SendMessageRequest {
                content: "x".repeat(4096),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("1024"), "{}", e.message());
    assert_eq!(gw.openai.stats.started.load(Ordering::SeqCst), 0);
}

async fn first_delta(stream: &mut tonic::Streaming<chat::ChatEvent>) {
    loop {
        let ev = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("event in time")
            .expect("stream ok")
            .expect("stream open");
        if matches!(ev.event, Some(chat::chat_event::Event::Delta(_))) {
            return;
        }
    }
}

#[tokio::test]
async fn a_client_going_away_cancels_the_upstream_stream() {
    let gw = Gw::start(|_| {}).await;
    let s = gw.session(None).await;
    // Native gRPC: drop the response stream.
    let mut stream = ChatServiceClient::new(gw.channel().await)
        .send_message(authed(
            &s.token,
            chat::SendMessageRequest {
                content: "[slow] tell me everything".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    first_delta(&mut stream).await;
    drop(stream);
    assert!(
        wait_until(async || gw.openai.dropped() >= 1).await,
        "the model stream was not cancelled"
    );

    // grpc-web over HTTP/1.1: close the connection mid-stream.
    let req = chat::SendMessageRequest {
        content: "[slow] and again".into(),
        ..Default::default()
    };
    let mut frame = vec![0u8];
    let bytes = prost::Message::encode_to_vec(&req);
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /confab.chat.v1.ChatService/SendMessage HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        s.token,
        frame.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&frame).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("Partial") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("bytes in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    drop(tcp);
    assert!(
        wait_until(async || gw.openai.dropped() >= 2).await,
        "closing the grpc-web connection did not cancel the model stream"
    );
}

#[tokio::test]
async fn health_metrics_and_static_files() {
    let gw = Gw::start(|_| {}).await;
    std::fs::create_dir_all(gw.dir.path().join("web")).unwrap();
    let index = format!(
        "<!doctype html><title>Confab</title>{}",
        "<p>hi</p>".repeat(200)
    );
    std::fs::write(gw.dir.path().join("web/index.html"), &index).unwrap();
    std::fs::write(
        gw.dir.path().join("web/app.js"),
        "console.log('confab');".repeat(50),
    )
    .unwrap();
    let http = reqwest::Client::new();

    let health = http.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "serving");
    for svc in ["chat", "conversation", "files", "ratelimit"] {
        assert_eq!(body["services"][svc]["mode"], "in_process", "{body}");
    }

    // One chat, then the metrics carry it (and its time to first token).
    let s = gw.session(None).await;
    let mut stream = ChatServiceClient::new(gw.channel().await)
        .send_message(authed(
            &s.token,
            chat::SendMessageRequest {
                content: "Say hello".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    let text = http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"confab_rpc_requests_total{service="confab.chat.v1.ChatService",method="SendMessage",code="OK"} 1"#),
        "{text}"
    );
    // Chat's process-wide metrics (other tests in this process may add to them).
    assert!(
        text.contains("confab_time_to_first_token_seconds_count{model=\"gpt-4o\"} "),
        "{text}"
    );
    assert!(
        text.contains("confab_model_tokens_total{model=\"gpt-4o\",kind=\"completion\"} "),
        "{text}"
    );
    assert!(text.contains("confab_ratelimit_decisions_total{"), "{text}");
    // Each metric family exactly once.
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let all = types.len();
    types.sort();
    types.dedup();
    assert_eq!(types.len(), all, "a metric family twice:\n{text}");
    assert!(
        text.contains("confab_open_streams{service=\"confab.chat.v1.ChatService\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("confab_http_requests_total{path=\"/health\",status=\"200\"}"),
        "{text}"
    );

    // Static files: the client, index.html for app routes, gzip when asked.
    let root = http.get(gw.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 200);
    assert_eq!(root.text().await.unwrap(), index);
    let route = http
        .get(gw.url("/c/some-conversation"))
        .send()
        .await
        .unwrap();
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await.unwrap(), index);
    let js = http
        .get(gw.url("/app.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn health_goes_503_when_a_remote_upstream_is_down() {
    // The file service on its own port, as in the distributed mode.
    let dir = tempfile::tempdir().unwrap();
    let (listener, files_addr) = confab_common::testing::local_listener().await;
    let files_shutdown = confab_common::Shutdown::new();
    let routes = tonic::service::Routes::new(
        confab_files::server(confab_files::Config::local(dir.path()))
            .await
            .unwrap(),
    );
    let server =
        confab_common::server::GrpcServer::new(routes, &[confab_proto::service_names::FILES])
            .await
            .unwrap();
    let files_task =
        tokio::spawn(server.serve(listener, files_shutdown.clone(), Duration::from_millis(100)));

    let gw = Gw::start_with(|_| {}, |u| u.files = Some(format!("http://{files_addr}"))).await;
    let http = reqwest::Client::new();
    let get = async || {
        let r = http.get(gw.url("/health")).send().await.unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert!(
        wait_until(async || get().await.0 == 200).await,
        "{:?}",
        get().await
    );
    let (_, body) = get().await;
    assert_eq!(body["services"]["files"]["mode"], "remote");
    assert_eq!(body["services"]["files"]["status"], "serving");

    files_shutdown.trigger();
    let _ = files_task.await;
    assert!(
        wait_until(async || get().await.0 == 503).await,
        "{:?}",
        get().await
    );
    let (_, body) = get().await;
    assert_eq!(body["status"], "not_serving");
    assert_ne!(body["services"]["files"]["status"], "serving");
}

/// A conversation service whose gRPC health says SERVING but whose store is broken:
/// every call fails with INTERNAL.
#[derive(Clone)]
struct BrokenStore;

impl tonic::server::NamedService for BrokenStore {
    const NAME: &'static str = confab_proto::service_names::CONVERSATION;
}

impl tower::Service<http::Request<tonic::body::Body>> for BrokenStore {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(tonic::Status::internal("database is down").into_http()))
    }
}

#[tokio::test]
async fn health_checks_each_store_not_only_service_health() {
    let http = reqwest::Client::new();
    // In process: the SQLite conversation store and the file store answer.
    let gw = Gw::start(|_| {}).await;
    let r = http.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["services"]["conversation"]["store"], "serving",
        "{body}"
    );
    assert_eq!(body["services"]["files"]["store"], "serving", "{body}");
    drop(gw);

    // Remote: the service's own health is SERVING, its store is not.
    let (listener, addr) = confab_common::testing::local_listener().await;
    let stop = confab_common::Shutdown::new();
    let server = confab_common::server::GrpcServer::new(
        tonic::service::Routes::new(BrokenStore),
        &[confab_proto::service_names::CONVERSATION],
    )
    .await
    .unwrap();
    tokio::spawn(server.serve(listener, stop.clone(), Duration::from_millis(100)));
    let gw = Gw::start_with(|_| {}, |u| u.conversation = Some(format!("http://{addr}"))).await;
    let r = http.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["services"]["conversation"]["status"], "serving",
        "{body}"
    );
    assert_eq!(body["services"]["conversation"]["store"], "error", "{body}");
    assert_eq!(body["services"]["files"]["store"], "serving", "{body}");
    stop.trigger();
}

#[tokio::test]
async fn stalled_connections_are_closed() {
    let gw = Gw::start(|e| e.limits.header_read_timeout = Duration::from_secs(1)).await;
    for partial in [&b"P"[..], b"GET /health HTTP/1.1\r\nhost: x\r\n"] {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(partial).await.unwrap();
        let mut buf = Vec::new();
        // The server closes (possibly after a 408); a read to EOF returns.
        let r = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "connection kept open after {partial:?}");
    }
}

// --- OIDC -------------------------------------------------------------------------

struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

fn ed25519_key(kid: &str) -> TestKey {
    // PKCS#8 v1 wrapper for a raw Ed25519 seed.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    der.extend_from_slice(&seed);
    let encoding = EncodingKey::from_ed_der(&der);
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    TestKey {
        kid: kid.to_owned(),
        encoding,
        jwk,
    }
}

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "confab";

fn jwt(key: &TestKey, sub: &str, aud: &str, exp_offset_secs: i64) -> String {
    let now = now_ms() as i64 / 1000;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": aud, "sub": sub,
        "iat": now, "exp": now + exp_offset_secs,
    });
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

#[tokio::test]
async fn oidc_bearer_tokens_are_verified_against_the_jwks() {
    let key = ed25519_key("k1");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&JwkSet {
            keys: vec![key.jwk.clone()],
        })
        .unwrap(),
    )
    .unwrap();
    let gw = Gw::start(|e| {
        e.oidc = Some(OidcConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks: JwksSource::File(jwks.clone()),
            min_refetch: OidcConfig::DEFAULT_MIN_REFETCH,
        })
    })
    .await;
    let mut client = ConversationServiceClient::new(gw.channel().await);
    let call = |token: String| authed(&token, conv::ListConversationsRequest::default());

    let good = jwt(&key, "alice@example", AUDIENCE, 300);
    client
        .list_conversations(call(good.clone()))
        .await
        .expect("valid JWT");
    // The session endpoint turns it into a session for the same user.
    let s = gw.session(Some(&good)).await;
    assert_eq!(s.user_id, "alice@example");

    let attacker = ed25519_key("k1");
    let cases = [
        ("expired", jwt(&key, "alice@example", AUDIENCE, -600)),
        (
            "wrong audience",
            jwt(&key, "alice@example", "someone-else", 300),
        ),
        (
            "forged signature",
            jwt(&attacker, "alice@example", AUDIENCE, 300),
        ),
        (
            "unknown key",
            jwt(&ed25519_key("k9"), "alice@example", AUDIENCE, 300),
        ),
        ("anonymous id", jwt(&key, "anon-0123", AUDIENCE, 300)),
    ];
    for (what, token) in cases {
        let e = client.list_conversations(call(token)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
    }
}

#[tokio::test]
async fn oidc_keys_are_refetched_when_a_new_kid_appears() {
    let k1 = ed25519_key("k1");
    let k2 = ed25519_key("k2");
    let served = Arc::new(parking_lot::Mutex::new(JwkSet {
        keys: vec![k1.jwk.clone()],
    }));
    let fetches = Arc::new(AtomicUsize::new(0));
    let app = {
        let served = served.clone();
        let fetches = fetches.clone();
        axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let served = served.clone();
                let fetches = fetches.clone();
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(served.lock().clone())
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let gw = Gw::start(|e| {
        e.oidc = Some(OidcConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks: JwksSource::Url(format!("http://{jwks_addr}/jwks")),
            min_refetch: Duration::from_secs(5),
        })
    })
    .await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "keys preloaded at start");
    let mut client = ConversationServiceClient::new(gw.channel().await);
    let call = |token: String| authed(&token, conv::ListConversationsRequest::default());
    client
        .list_conversations(call(jwt(&k1, "bob", AUDIENCE, 300)))
        .await
        .expect("k1 accepted");
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "cached");

    // Unknown kids right after a fetch do not hammer the IdP.
    for _ in 0..5 {
        let e = client
            .list_conversations(call(jwt(&k2, "bob", AUDIENCE, 300)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "refetch is rate-limited");
    // The IdP rotates: once the interval has passed, the new kid is fetched and accepted.
    served.lock().keys.push(k2.jwk.clone());
    tokio::time::sleep(Duration::from_millis(5500)).await;
    client
        .list_conversations(call(jwt(&k2, "bob", AUDIENCE, 300)))
        .await
        .expect("k2 accepted after refetch");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}
