//! Model providers: one trait, streaming text deltas and usage. Dropping a [`ModelStream`]
//! cancels the upstream call (the HTTP response or the decode thread goes with it).

pub mod embedded;
pub mod openai;

use std::pin::Pin;

use confab_proto::chat::v1::FailureCode;
use futures::Stream;

/// What a model can do, as listed by ListModels and used by the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub id: String,
    pub display_name: String,
    /// "openai", "openai-compatible" or "embedded".
    pub provider: &'static str,
    pub vision: bool,
    pub context_window: u32,
    pub max_output_tokens: u32,
    pub embedded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// A `data:image/...;base64,...` URL.
    ImageUrl(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptMessage {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl PromptMessage {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            parts: vec![Part::Text(text.into())],
        }
    }

    /// The text parts joined (images dropped).
    pub fn joined_text(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            if let Part::Text(t) = p {
                if !out.is_empty() {
                    out.push_str("\n\n");
                }
                out.push_str(t);
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct ModelRequest {
    pub model: String,
    pub messages: Vec<PromptMessage>,
    /// Upper bound on generated tokens.
    pub max_output_tokens: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ContentFilter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEvent {
    Delta(String),
    Usage(Usage),
    Finished(Finish),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("the model provider is rate limiting requests: {message}")]
    RateLimited {
        retry_after_seconds: Option<u32>,
        message: String,
    },
    #[error("the model provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the model provider did not answer in time: {0}")]
    Timeout(String),
    #[error("the model provider sent an error: {0}")]
    Upstream(String),
    #[error("the prompt is too large for the model: {0}")]
    ContextTooLarge(String),
    #[error("the model failed: {0}")]
    Internal(String),
}

impl ProviderError {
    pub fn failure_code(&self) -> FailureCode {
        match self {
            Self::RateLimited { .. } => FailureCode::UpstreamRateLimited,
            Self::Unavailable(_) => FailureCode::UpstreamUnavailable,
            Self::Timeout(_) => FailureCode::UpstreamTimeout,
            Self::Upstream(_) => FailureCode::UpstreamError,
            Self::ContextTooLarge(_) => FailureCode::ContextTooLarge,
            Self::Internal(_) => FailureCode::Internal,
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Unavailable(_) | Self::Timeout(_)
        )
    }

    pub fn retry_after_seconds(&self) -> Option<u32> {
        match self {
            Self::RateLimited {
                retry_after_seconds,
                ..
            } => *retry_after_seconds,
            _ => None,
        }
    }
}

pub type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelEvent, ProviderError>> + Send>>;

#[async_trait::async_trait]
pub trait ModelProvider: Send + Sync + 'static {
    /// "openai", "openai-compatible" or "embedded".
    fn name(&self) -> &'static str;
    fn models(&self) -> Vec<ModelSpec>;
    fn default_model(&self) -> String;
    /// Model used to name conversations; `None` names them from the first message.
    fn title_model(&self) -> Option<String>;
    /// Makes the model ready (loads weights/tokenizer); cheap once done.
    async fn prepare(&self, _model: &str) -> Result<(), ProviderError> {
        Ok(())
    }
    /// Tokens of `text` for `model` (exact once prepared).
    fn count_tokens(&self, model: &str, text: &str) -> u32;
    /// Starts a generation. Dropping the stream cancels it.
    async fn stream(&self, request: ModelRequest) -> Result<ModelStream, ProviderError>;
}
