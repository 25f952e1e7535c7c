//! Shared by the gateway's test binaries: a fake OpenAI-compatible model server that
//! streams SSE with delays, the whole product in one gateway (real services, fake
//! model), sessions, and raw grpc-web calls.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::Response;
use axum::routing::post;
use confab_common::Shutdown;
use confab_common::config::ServiceUrls;
use confab_gateway::auth::IssuedSession;
use confab_gateway::{Config, EdgeConfig, Gateway, Upstreams};
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;

pub const WAIT: Duration = Duration::from_secs(60);

/// Counts model streams that the client abandoned before the end.
#[derive(Default)]
pub struct ModelStats {
    pub started: AtomicUsize,
    pub dropped: AtomicUsize,
    pub completed: AtomicUsize,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    pub stats: Arc<ModelStats>,
}

struct Probe(Arc<ModelStats>, bool);
impl Drop for Probe {
    fn drop(&mut self) {
        let c = if self.1 {
            &self.0.completed
        } else {
            &self.0.dropped
        };
        c.fetch_add(1, Ordering::SeqCst);
    }
}

fn chunk(content: &str) -> String {
    let c = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",
           "choices":[{"index":0,"delta":{"content":content},"finish_reason":null}]});
    format!("data: {c}\n\n")
}

fn tail(n: u32) -> Vec<String> {
    let fin = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",
           "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
    let usage = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",
           "choices":[],"usage":{"prompt_tokens":10,"completion_tokens":n,"total_tokens":10+n}});
    vec![
        format!("data: {fin}\n\n"),
        format!("data: {usage}\n\n"),
        "data: [DONE]\n\n".into(),
    ]
}

/// `[slow]` in the user's text: 600 tokens, 50 ms apart; otherwise "Hello world!".
async fn completions(
    axum::extract::State(stats): axum::extract::State<Arc<ModelStats>>,
    Json(body): Json<Value>,
) -> Response<Body> {
    stats.started.fetch_add(1, Ordering::SeqCst);
    let text = body.to_string();
    let items: Vec<(u64, String)> = if text.contains("Write a short title") {
        std::iter::once((0, chunk("Gateway Test")))
            .chain(tail(2).into_iter().map(|t| (0, t)))
            .collect()
    } else if text.contains("[slow]") {
        let mut v = vec![(0, chunk("Partial"))];
        v.extend((0..600).map(|_| (50, chunk(" more"))));
        v.extend(tail(601).into_iter().map(|t| (0, t)));
        v
    } else {
        let mut v = vec![(0, chunk("Hello")), (5, chunk(" world")), (5, chunk("!"))];
        v.extend(tail(3).into_iter().map(|t| (0, t)));
        v
    };
    let probe = Probe(stats, false);
    let stream = futures::stream::unfold(
        (items.into_iter(), probe),
        |(mut it, mut probe)| async move {
            match it.next() {
                Some((delay, text)) => {
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    Some((Ok::<_, Infallible>(text), (it, probe)))
                }
                None => {
                    probe.1 = true;
                    drop(probe);
                    None
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

impl FakeOpenAi {
    pub async fn start() -> Self {
        let stats = Arc::new(ModelStats::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(stats.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, stats }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn dropped(&self) -> usize {
        self.stats.dropped.load(Ordering::SeqCst)
    }
}

pub fn chat_config(openai: &FakeOpenAi, data: &std::path::Path) -> confab_chat::Config {
    let mut o =
        confab_chat::provider::openai::OpenAiConfig::new("sk-test", Some(openai.base_url()));
    o.first_byte_timeout = Duration::from_secs(10);
    o.idle_timeout = Duration::from_secs(10);
    confab_chat::Config {
        openai: Some(o),
        model_path: data.join("models/none.gguf"),
        save_interval: Duration::from_millis(100),
        ..confab_chat::Config::default()
    }
}

/// One gateway running the whole product in this process, with a fake model.
pub struct Gw {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub openai: FakeOpenAi,
    pub secret: Vec<u8>,
    pub dir: tempfile::TempDir,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gw {
    pub async fn start(customize: impl FnOnce(&mut EdgeConfig)) -> Self {
        Self::start_with(customize, |_| {}).await
    }

    pub async fn start_with(
        customize: impl FnOnce(&mut EdgeConfig),
        urls: impl FnOnce(&mut ServiceUrls),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let openai = FakeOpenAi::start().await;
        let secret = b"test-secret-test-secret-test-secret!".to_vec();
        let mut edge = EdgeConfig::new(dir.path());
        edge.session_secret = Some(secret.clone());
        edge.web_dir = dir.path().join("web");
        customize(&mut edge);
        let mut service_urls = ServiceUrls::default();
        urls(&mut service_urls);
        let config = Config {
            edge: edge.clone(),
            chat: Some(chat_config(&openai, dir.path())),
            conversation: Some(confab_conversation::Config::sqlite(dir.path())),
            files: Some(confab_files::Config::local(dir.path())),
            ratelimit: Some(confab_ratelimit::Config::default()),
            urls: service_urls,
        };
        let upstreams = Upstreams::build(&config).await.expect("upstreams");
        let gateway = Gateway::new(edge, upstreams).await.expect("gateway");
        let (listener, addr) = confab_common::testing::local_listener().await;
        let shutdown = Shutdown::new();
        let task = tokio::spawn(gateway.serve(listener, shutdown.clone(), Duration::from_secs(2)));
        Self {
            addr,
            shutdown,
            openai,
            secret,
            dir,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        confab_common::testing::connect(self.addr).await
    }

    /// `POST /auth/session`, optionally with a bearer token.
    pub async fn session(&self, bearer: Option<&str>) -> IssuedSession {
        session_at(self.addr, bearer).await
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub async fn session_at(addr: SocketAddr, bearer: Option<&str>) -> IssuedSession {
    let mut req = reqwest::Client::new().post(format!("http://{addr}/auth/session"));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.expect("session request");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("session json")
}

/// A request with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    req
}

/// One grpc-web call over HTTP/1.1 with a raw HTTP client: (HTTP status, headers, body).
pub async fn grpc_web_call(
    addr: SocketAddr,
    path: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
    text: bool,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    use base64::Engine;
    let mut frame = vec![0u8];
    let bytes = message.encode_to_vec();
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    let (ct, body) = if text {
        (
            "application/grpc-web-text",
            base64::engine::general_purpose::STANDARD
                .encode(&frame)
                .into_bytes(),
        )
    } else {
        ("application/grpc-web+proto", frame)
    };
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let mut req = client
        .post(format!("http://{addr}{path}"))
        .header("content-type", ct)
        .header("x-grpc-web", "1")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("grpc-web request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap().to_vec();
    let body = if text {
        base64::engine::general_purpose::STANDARD
            .decode(&body)
            .unwrap_or(body)
    } else {
        body
    };
    (status, headers, body)
}

/// The grpc-status of a grpc-web response: from headers (trailers-only) or the
/// trailer frame at the end of the body.
pub fn grpc_web_status(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Option<i32> {
    if let Some(v) = headers.get("grpc-status") {
        return v.to_str().ok()?.parse().ok();
    }
    let mut rest = body;
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len.min(rest.len() - 5)];
        if flag & 0x80 != 0 {
            let text = String::from_utf8_lossy(payload);
            return text
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:"))
                .and_then(|v| v.trim().parse().ok());
        }
        rest = &rest[(5 + len).min(rest.len())..];
    }
    None
}

/// `buf` (npm @bufbuild/buf), installed into ~/.cache/confab/node when missing.
pub fn buf() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-buf.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("run install-buf.sh");
    assert!(
        out.status.success(),
        "install-buf.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The protos as a descriptor-set file, for `buf curl --schema`.
pub fn schema_file(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("confab.binpb");
    std::fs::write(&p, confab_proto::FILE_DESCRIPTOR_SET).unwrap();
    p
}

/// Runs `buf curl --protocol grpcweb` (HTTP/1.1) and returns (success, stdout, stderr).
pub async fn buf_curl(
    schema: &std::path::Path,
    url: &str,
    token: &str,
    data: &str,
) -> (bool, String, String) {
    let buf = buf();
    let out = tokio::process::Command::new(buf)
        .args(["curl", "--protocol", "grpcweb", "--schema"])
        .arg(schema)
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args(["-d", data, url])
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("buf curl finished")
        .expect("buf curl ran");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
