//! OpenAI and OpenAI-compatible servers (Ollama, vLLM, llama.cpp): Chat Completions with
//! `stream: true` and `stream_options.include_usage`, read as Server-Sent Events with
//! lenient types. Tolerated: missing `created`/`id`, unknown finish reasons,
//! `"usage":{}`, keep-alive comments. Reported as failures: a mid-stream `{"error":…}`,
//! unparseable chunks, a cut connection, HTTP 429/5xx, and timeouts (connect, first
//! byte, idle between chunks). No automatic retries: the user sees the failure at once.

use std::collections::VecDeque;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Finish, ModelEvent, ModelProvider, ModelRequest, ModelSpec, ModelStream, Part, ProviderError,
    Usage,
};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    pub api_key: String,
    /// Without the trailing `/chat/completions`.
    pub base_url: String,
    pub model: String,
    pub title_model: String,
    pub connect_timeout: Duration,
    /// Until the response headers arrive.
    pub first_byte_timeout: Duration,
    /// Between two chunks of the stream.
    pub idle_timeout: Duration,
    /// Overrides the built-in table (tests, unusual compatible servers).
    pub models: Option<Vec<ModelSpec>>,
}

impl OpenAiConfig {
    pub fn new(api_key: impl Into<String>, base_url: Option<String>) -> Self {
        Self {
            api_key: api_key.into(),
            base_url: base_url
                .map(|u| u.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
            model: "gpt-4o".into(),
            title_model: "gpt-4o-mini".into(),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            models: None,
        }
    }

    pub fn provider_name(&self) -> &'static str {
        if self.base_url == DEFAULT_BASE_URL {
            "openai"
        } else {
            "openai-compatible"
        }
    }
}

/// Capabilities of well-known model ids; unknown ids get a conservative guess.
pub fn model_spec(provider: &'static str, id: &str) -> ModelSpec {
    let l = id.to_ascii_lowercase();
    let vision = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-5",
        "gpt-4-turbo",
        "o1",
        "o3",
        "o4",
    ]
    .iter()
    .any(|p| l.starts_with(p))
        || [
            "vision",
            "llava",
            "-vl",
            "gemma3",
            "pixtral",
            "llama3.2-vision",
        ]
        .iter()
        .any(|p| l.contains(p));
    let (context_window, max_output_tokens) = if l.starts_with("gpt-4.1") {
        (1_047_576, 32_768)
    } else if l.starts_with("gpt-5") {
        (400_000, 128_000)
    } else if l.starts_with("gpt-4o") || l.starts_with("gpt-4-turbo") {
        (128_000, 16_384)
    } else if l.starts_with('o') && l.chars().nth(1).is_some_and(|c| c.is_ascii_digit()) {
        (200_000, 100_000)
    } else if l.starts_with("gpt-3.5") {
        (16_385, 4_096)
    } else if l.starts_with("gpt-4") {
        (8_192, 4_096)
    } else {
        (8_192, 2_048)
    };
    ModelSpec {
        id: id.to_owned(),
        display_name: id.to_owned(),
        provider,
        vision,
        context_window,
        max_output_tokens,
        embedded: false,
    }
}

pub struct OpenAiProvider {
    config: OpenAiConfig,
    http: reqwest::Client,
    models: Vec<ModelSpec>,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ProviderError::Internal(format!("HTTP client: {e}")))?;
        // Loading a BPE table takes a moment: do it now, not on the first request.
        let warm = config.model.clone();
        std::thread::spawn(move || crate::tokens::tiktoken_count(&warm, "warm up"));
        let name = config.provider_name();
        let models = config.models.clone().unwrap_or_else(|| {
            let mut v = vec![model_spec(name, &config.model)];
            if config.title_model != config.model {
                v.push(model_spec(name, &config.title_model));
            }
            v
        });
        Ok(Self {
            config,
            http,
            models,
        })
    }

    fn body(&self, request: &ModelRequest) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| {
                let only_text = m.parts.iter().all(|p| matches!(p, Part::Text(_)));
                let content = if only_text {
                    Value::String(m.joined_text())
                } else {
                    Value::Array(
                        m.parts
                            .iter()
                            .map(|p| match p {
                                Part::Text(t) => json!({"type": "text", "text": t}),
                                Part::ImageUrl(u) => {
                                    json!({"type": "image_url", "image_url": {"url": u}})
                                }
                            })
                            .collect(),
                    )
                };
                json!({"role": m.role.as_str(), "content": content})
            })
            .collect();
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if request.max_output_tokens > 0 {
            // `max_tokens` is what compatible servers understand; OpenAI still accepts it
            // for chat models, but its reasoning models want `max_completion_tokens`.
            let key = if self.config.provider_name() == "openai" {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body[key] = json!(request.max_output_tokens);
        }
        body
    }
}

#[async_trait::async_trait]
impl ModelProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        self.config.provider_name()
    }

    fn models(&self) -> Vec<ModelSpec> {
        self.models.clone()
    }

    fn default_model(&self) -> String {
        self.config.model.clone()
    }

    fn title_model(&self) -> Option<String> {
        Some(self.config.title_model.clone())
    }

    fn count_tokens(&self, model: &str, text: &str) -> u32 {
        crate::tokens::tiktoken_count(model, text)
    }

    async fn stream(&self, request: ModelRequest) -> Result<ModelStream, ProviderError> {
        let url = format!("{}/chat/completions", self.config.base_url);
        let send = self
            .http
            .post(&url)
            .bearer_auth(&self.config.api_key)
            .header("accept", "text/event-stream")
            .json(&self.body(&request))
            .send();
        let response = match tokio::time::timeout(self.config.first_byte_timeout, send).await {
            Err(_) => {
                return Err(ProviderError::Timeout(format!(
                    "no response within {} s",
                    self.config.first_byte_timeout.as_secs_f32()
                )));
            }
            Ok(Err(e)) if e.is_timeout() => return Err(ProviderError::Timeout(e.to_string())),
            Ok(Err(e)) => {
                return Err(ProviderError::Unavailable(format!(
                    "cannot reach the model provider: {}",
                    confab_common::error::cause_chain(&e)
                )));
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|s| s.ceil() as u32);
            let body = tokio::time::timeout(self.config.idle_timeout, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(http_error(status.as_u16(), retry_after, &body));
        }
        let events = response.bytes_stream().eventsource();
        let state = SseState {
            events: Box::pin(events),
            idle: self.config.idle_timeout,
            pending: VecDeque::new(),
            done: false,
            finished: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, next_event)))
    }
}

type EventStream = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

struct SseState {
    events: EventStream,
    idle: Duration,
    pending: VecDeque<ModelEvent>,
    done: bool,
    finished: bool,
}

/// Reads what is left of a finished event stream (briefly, and not much of it).
async fn drain(mut rest: EventStream) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..64 {
            if rest.next().await.is_none() {
                break;
            }
        }
    })
    .await;
}

async fn next_event(mut st: SseState) -> Option<(Result<ModelEvent, ProviderError>, SseState)> {
    loop {
        if let Some(ev) = st.pending.pop_front() {
            return Some((Ok(ev), st));
        }
        if st.done {
            return None;
        }
        let item = match tokio::time::timeout(st.idle, st.events.next()).await {
            Err(_) => {
                st.done = true;
                let msg = format!("no data for {} s", st.idle.as_secs_f32());
                return Some((Err(ProviderError::Timeout(msg)), st));
            }
            Ok(item) => item,
        };
        match item {
            None => {
                st.done = true;
                if !st.finished {
                    let e = ProviderError::Unavailable(
                        "the connection closed before the answer finished".into(),
                    );
                    return Some((Err(e), st));
                }
            }
            Some(Err(e)) => {
                st.done = true;
                let err = match e {
                    eventsource_stream::EventStreamError::Transport(e) if e.is_timeout() => {
                        ProviderError::Timeout(e.to_string())
                    }
                    eventsource_stream::EventStreamError::Transport(e) => {
                        ProviderError::Unavailable(format!(
                            "the connection broke: {}",
                            confab_common::error::cause_chain(&e)
                        ))
                    }
                    other => ProviderError::Upstream(format!("malformed event stream: {other}")),
                };
                return Some((Err(err), st));
            }
            Some(Ok(event)) => {
                let data = event.data.trim();
                if data.is_empty() {
                    continue;
                }
                if data == "[DONE]" {
                    st.done = true;
                    st.finished = true;
                    // The answer is complete; the body's last bytes (the chunked ending)
                    // are read off in the background so the connection goes back to the
                    // pool instead of being closed — the next request skips a handshake.
                    let rest =
                        std::mem::replace(&mut st.events, Box::pin(futures::stream::empty()));
                    tokio::spawn(drain(rest));
                    continue;
                }
                match parse_chunk(data) {
                    Ok(parsed) => {
                        if parsed.iter().any(|e| matches!(e, ModelEvent::Finished(_))) {
                            st.finished = true;
                        }
                        st.pending.extend(parsed);
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Chunk {
    choices: Option<Vec<Choice>>,
    usage: Option<RawUsage>,
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Choice {
    delta: Option<Delta>,
    /// Some servers send whole messages in a stream chunk.
    message: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Delta {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawUsage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    total_tokens: Option<u32>,
}

/// One `data:` payload → the events it carries.
pub(crate) fn parse_chunk(data: &str) -> Result<Vec<ModelEvent>, ProviderError> {
    let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
        ProviderError::Upstream(format!(
            "unparseable chunk ({e}): {}",
            data.chars().take(200).collect::<String>()
        ))
    })?;
    if let Some(err) = chunk.error.filter(|e| !e.is_null()) {
        return Err(ProviderError::Upstream(error_message(&err)));
    }
    let mut out = Vec::new();
    for choice in chunk.choices.unwrap_or_default() {
        for d in [choice.delta, choice.message].into_iter().flatten() {
            for text in [d.content, d.refusal].into_iter().flatten() {
                if !text.is_empty() {
                    out.push(ModelEvent::Delta(text));
                }
            }
        }
        if let Some(reason) = choice.finish_reason {
            out.push(ModelEvent::Finished(match reason.as_str() {
                "length" => Finish::Length,
                "content_filter" => Finish::ContentFilter,
                // "stop", "eos_token", "tool_calls", anything a compatible server invents.
                _ => Finish::Stop,
            }));
        }
    }
    if let Some(u) = chunk.usage
        && (u.prompt_tokens.is_some() || u.completion_tokens.is_some())
    {
        let prompt = u.prompt_tokens.unwrap_or(0);
        let completion = u.completion_tokens.unwrap_or(0);
        out.push(ModelEvent::Usage(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: u.total_tokens.unwrap_or(prompt + completion),
        }));
    }
    Ok(out)
}

fn error_message(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| err.to_string()),
        other => other.to_string(),
    }
}

pub(crate) fn http_error(status: u16, retry_after: Option<u32>, body: &str) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let mut message = err
        .map(error_message)
        .unwrap_or_else(|| body.chars().take(300).collect::<String>());
    if message.trim().is_empty() {
        message = format!("HTTP {status}");
    } else {
        message = format!("HTTP {status}: {message}");
    }
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    match status {
        429 => ProviderError::RateLimited {
            retry_after_seconds: retry_after,
            message,
        },
        408 | 504 => ProviderError::Timeout(message),
        500..=599 => ProviderError::Unavailable(message),
        _ if code == "context_length_exceeded" => ProviderError::ContextTooLarge(message),
        _ => ProviderError::Upstream(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_compatible_server_deviations() {
        // No `created`, no `id`, unknown finish reason, empty usage.
        let ev = parse_chunk(
            r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":"eos_token"}],"usage":{}}"#,
        )
        .unwrap();
        assert_eq!(
            ev,
            vec![
                ModelEvent::Delta("hi".into()),
                ModelEvent::Finished(Finish::Stop)
            ]
        );
        let ev = parse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#)
            .unwrap();
        assert_eq!(
            ev,
            vec![ModelEvent::Usage(Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                total_tokens: 7
            })]
        );
        assert!(
            parse_chunk(r#"{"choices":null,"usage":null}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn error_objects_and_garbage_fail() {
        let e =
            parse_chunk(r#"{"error":{"message":"overloaded","type":"server_error"}}"#).unwrap_err();
        assert_eq!(e, ProviderError::Upstream("overloaded".into()));
        assert!(matches!(
            parse_chunk("{not json").unwrap_err(),
            ProviderError::Upstream(_)
        ));
    }

    #[test]
    fn http_statuses_map_to_failures() {
        assert!(matches!(
            http_error(429, Some(7), r#"{"error":{"message":"slow down"}}"#),
            ProviderError::RateLimited {
                retry_after_seconds: Some(7),
                ..
            }
        ));
        assert!(matches!(
            http_error(503, None, "oops"),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            http_error(
                400,
                None,
                r#"{"error":{"message":"too long","code":"context_length_exceeded"}}"#
            ),
            ProviderError::ContextTooLarge(_)
        ));
    }

    #[test]
    fn known_models_have_capabilities() {
        let m = model_spec("openai", "gpt-4o");
        assert!(m.vision);
        assert_eq!(m.context_window, 128_000);
        assert!(!model_spec("openai-compatible", "llama3.1:8b").vision);
    }
}
