//! A fake OpenAI-compatible server (axum) that streams Server-Sent Events with delays.
//! The scenario is picked per request from a `[scenario:NAME]` tag in the last user
//! message; title requests get a fixed title. It records request bodies and counts
//! streams whose body was dropped before the end (the client went away).
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Recorder {
    pub requests: Mutex<Vec<Value>>,
    /// Streams dropped before they finished.
    pub dropped: AtomicUsize,
    /// Streams that sent everything.
    pub completed: AtomicUsize,
    pub started: AtomicUsize,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub rec: Arc<Recorder>,
}

impl FakeUpstream {
    pub async fn start() -> Self {
        let rec = Arc::new(Recorder::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(rec.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        use axum::serve::ListenerExt;
        let counter = rec.clone();
        let listener = listener.tap_io(move |tcp| {
            let _ = tcp.set_nodelay(true);
            counter.connections.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, rec }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.rec.connections.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> usize {
        self.rec.dropped.load(Ordering::SeqCst)
    }

    /// Chat requests (title requests left out).
    pub fn chat_requests(&self) -> Vec<Value> {
        self.rec
            .requests
            .lock()
            .iter()
            .filter(|r| !is_title(r))
            .cloned()
            .collect()
    }
}

fn is_title(body: &Value) -> bool {
    body["messages"][0]["content"]
        .as_str()
        .is_some_and(|s| s.starts_with("Write a short title"))
}

fn last_user_text(body: &Value) -> String {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let Some(m) = msgs.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn scenario(text: &str) -> String {
    text.split("[scenario:")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or("normal")
        .to_owned()
}

fn chunk(content: &str) -> String {
    json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",
           "choices":[{"index":0,"delta":{"content":content},"finish_reason":null}]})
    .to_string()
}

fn finish(reason: &str) -> String {
    json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",
           "choices":[{"index":0,"delta":{},"finish_reason":reason}]})
    .to_string()
}

fn usage(p: u32, c: u32) -> String {
    json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],
           "usage":{"prompt_tokens":p,"completion_tokens":c,"total_tokens":p+c}})
    .to_string()
}

/// Marks the stream dropped unless it was defused at the end.
struct DropProbe {
    rec: Arc<Recorder>,
    done: bool,
}

impl DropProbe {
    fn defuse(mut self) {
        self.done = true;
    }
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        if self.done {
            self.rec.completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.rec.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `(delay before, raw SSE text)` items, sent in order; `None` ends without [DONE].
fn sse<T: Into<bytes::Bytes> + Send + 'static>(
    rec: Arc<Recorder>,
    items: Vec<(u64, T)>,
) -> Response<Body> {
    sse_paced(rec, items, false)
}

/// Like `sse`; with `jitter`, each delay is drawn uniformly from half to one and a half
/// times its value (same mean), as a real model's token times vary — streams started
/// together do not stay in lockstep.
fn sse_paced<T: Into<bytes::Bytes> + Send + 'static>(
    rec: Arc<Recorder>,
    items: Vec<(u64, T)>,
    jitter: bool,
) -> Response<Body> {
    static SEED: AtomicUsize = AtomicUsize::new(0x9e37_79b9);
    let mut rng = SEED.fetch_add(0x6a09_e667, Ordering::Relaxed) as u64 | 1;
    let items: Vec<(u64, T)> = items
        .into_iter()
        .map(|(delay, text)| {
            if !jitter || delay == 0 {
                return (delay, text);
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (delay / 2 + rng % (delay + 1), text)
        })
        .collect();
    let probe = DropProbe { rec, done: false };
    let stream =
        futures::stream::unfold((items.into_iter(), probe), |(mut it, probe)| async move {
            match it.next() {
                Some((delay, text)) => {
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    Some((Ok::<_, Infallible>(text), (it, probe)))
                }
                None => {
                    probe.defuse();
                    None
                }
            }
        });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn data(s: &str) -> String {
    format!("data: {s}\n\n")
}

/// `token_stream`, rendered once per shape (benchmarks ask for thousands of them; the
/// fake's own cost should not be what they measure).
fn cached_token_stream(n: usize, first_ms: u64, gap_ms: u64) -> Vec<(u64, bytes::Bytes)> {
    type Cache = Mutex<HashMap<(usize, u64, u64), Vec<(u64, bytes::Bytes)>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE
        .get_or_init(Default::default)
        .lock()
        .entry((n, first_ms, gap_ms))
        .or_insert_with(|| {
            token_stream(n, first_ms, gap_ms)
                .into_iter()
                .map(|(d, t)| (d, bytes::Bytes::from(t)))
                .collect()
        })
        .clone()
}

/// N tokens, `gap_ms` apart, then finish + usage + [DONE].
pub fn token_stream(n: usize, first_ms: u64, gap_ms: u64) -> Vec<(u64, String)> {
    let mut items = vec![];
    for i in 0..n {
        let delay = if i == 0 { first_ms } else { gap_ms };
        items.push((delay, data(&chunk(&format!("t{i} ")))));
    }
    items.push((0, data(&finish("stop"))));
    items.push((0, data(&usage(10, n as u32))));
    items.push((0, data("[DONE]")));
    items
}

async fn completions(State(rec): State<Arc<Recorder>>, Json(body): Json<Value>) -> Response<Body> {
    {
        // The most recent requests (tests look at the last few; benchmarks send thousands).
        let mut requests = rec.requests.lock();
        if requests.len() >= 512 {
            requests.remove(0);
        }
        requests.push(body.clone());
    }
    rec.started.fetch_add(1, Ordering::SeqCst);
    if is_title(&body) {
        return sse(
            rec,
            vec![
                (0, data(&chunk("\"Test Title\""))),
                (0, data(&finish("stop"))),
                (0, data(&usage(30, 3))),
                (0, data("[DONE]")),
            ],
        );
    }
    let text = last_user_text(&body);
    let name = scenario(&text);
    let items = match name.as_str() {
        "normal" => vec![
            (0, data(&chunk("Hello"))),
            (5, data(&chunk(" world"))),
            (5, data(&chunk("!"))),
            (0, data(&finish("stop"))),
            (0, data(&usage(12, 3))),
            (0, data("[DONE]")),
        ],
        // A compatible server's deviations: no id/created, unknown finish reason, empty
        // usage, keep-alive comments, CRLF line ends.
        "deviations" => vec![
            (0, ": keep-alive\n\n".to_owned()),
            (
                0,
                data(r#"{"choices":[{"delta":{"role":"assistant","content":"Hi"}}]}"#),
            ),
            (
                0,
                format!(
                    "data: {}\r\n\r\n",
                    r#"{"choices":[{"delta":{"content":" there"},"finish_reason":null}]}"#
                ),
            ),
            (
                0,
                data(r#"{"choices":[{"delta":{},"finish_reason":"eos_token"}],"usage":{}}"#),
            ),
            (0, data("[DONE]")),
        ],
        "tokens" => return sse(rec, cached_token_stream(50, 0, 0)),
        // A server that ends the body a moment after [DONE] (the chunked ending comes in
        // a later packet): the client must still read it to keep the connection.
        "linger" => {
            let mut v = token_stream(5, 0, 0);
            v.push((50, String::new()));
            v
        }
        // 50 tokens at 100 tokens/s on average (a fast hosted model): half a second per
        // answer.
        "paced" => return sse_paced(rec, cached_token_stream(50, 0, 10), true),
        // About a second and a half: long enough to leave in the middle.
        "medium" => token_stream(60, 0, 25),
        "slow" => {
            let mut v = vec![(0, data(&chunk("Partial")))];
            for _ in 0..600 {
                v.push((50, data(&chunk(" more"))));
            }
            v.push((0, data("[DONE]")));
            v
        }
        "error" => vec![
            (0, data(&chunk("Half an"))),
            (0, data(&chunk(" answer"))),
            (
                10,
                data(r#"{"error":{"message":"The model is overloaded","type":"server_error"}}"#),
            ),
        ],
        "malformed" => vec![
            (0, data(&chunk("Broken"))),
            (10, data("{\"choices\": [ {\"delta\": ")),
        ],
        "cut" => vec![(0, data(&chunk("Cut"))), (10, data(&chunk(" off")))],
        "idle" => vec![(0, data(&chunk("Then"))), (60_000, data("[DONE]"))],
        "429" => {
            return Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", "7")
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","code":"rate_limit_exceeded"}}"#,
                ))
                .unwrap();
        }
        "500" => {
            return Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Body::from("upstream exploded"))
                .unwrap();
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            return Response::new(Body::empty());
        }
        other => vec![
            (0, data(&chunk(&format!("unknown scenario {other}")))),
            (0, data("[DONE]")),
        ],
    };
    sse(rec, items)
}
