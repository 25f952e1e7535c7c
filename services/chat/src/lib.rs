//! Streaming answers from OpenAI-compatible or embedded models, with context planning, stop and regenerate.
//!
//! Code map: [`provider`] (the `ModelProvider` trait; OpenAI-compatible SSE and the
//! embedded candle model), [`context`] (pure planning of what the model sees),
//! [`registry`] (running generations: sequenced events, re-attach, stop),
//! [`service`] (the orchestration), and here the config, wiring and gRPC adapter.
#![forbid(unsafe_code)]

pub mod context;
pub mod error;
pub mod metrics;
pub mod provider;
pub mod registry;
pub mod service;
pub mod tokens;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use confab_common::binary::Launch;
use confab_common::config::{self, ConfigError};
use confab_common::server::GrpcServer;
use confab_common::{GrpcChannel, Identity};
use confab_proto::chat::v1 as chat;
use confab_proto::chat::v1::chat_service_server::{ChatService, ChatServiceServer};
use confab_proto::ratelimit::v1 as rl;
use futures::{Stream, StreamExt};
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::provider::ModelProvider;
use crate::provider::embedded::EmbeddedProvider;
use crate::provider::openai::{OpenAiConfig, OpenAiProvider};
use crate::service::{Chat, Providers};

/// Configuration read once at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Set when `OPENAI_API_KEY` is: OpenAI (or `OPENAI_BASE_URL`) is the default provider.
    pub openai: Option<OpenAiConfig>,
    /// The embedded GGUF model (`CONFAB_MODEL_PATH`).
    pub model_path: PathBuf,
    /// Sample the embedded model (false: greedy, deterministic).
    pub embedded_sampling: bool,
    /// How often a streaming answer is saved while it grows.
    pub save_interval: Duration,
    pub conversation_url: Option<String>,
    pub files_url: Option<String>,
    pub ratelimit_url: Option<String>,
    /// Detached generations (`detach_on_disconnect`) one user may run at once; from
    /// `MAX_CONCURRENT_STREAMS` (each also holds a rate-limit stream lease).
    pub max_detached_per_user: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            openai: None,
            model_path: PathBuf::from("./data/models").join(provider::embedded::MODEL_FILE),
            embedded_sampling: true,
            save_interval: Duration::from_secs(1),
            conversation_url: None,
            files_url: None,
            ratelimit_url: None,
            max_detached_per_user: 3,
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let openai = match config::env_opt("OPENAI_API_KEY")? {
            None => None,
            Some(key) => {
                let base = config::env_url("OPENAI_BASE_URL")?;
                let mut c = OpenAiConfig::new(key, base);
                if let Some(m) = config::env_opt("OPENAI_MODEL")? {
                    c.model = m;
                }
                if let Some(m) = config::env_opt("OPENAI_TITLE_MODEL")? {
                    c.title_model = m;
                }
                Some(c)
            }
        };
        let model_path = match config::env_opt("CONFAB_MODEL_PATH")? {
            Some(p) => PathBuf::from(p),
            None => config::data_dir()?
                .join("models")
                .join(provider::embedded::MODEL_FILE),
        };
        Ok(Self {
            openai,
            model_path,
            conversation_url: config::env_url("CONFAB_CONVERSATION_URL")?,
            files_url: config::env_url("CONFAB_FILES_URL")?,
            ratelimit_url: config::env_url("CONFAB_RATELIMIT_URL")?,
            max_detached_per_user: config::env_parse_range(
                "MAX_CONCURRENT_STREAMS",
                3u32,
                1,
                100_000,
            )? as usize,
            ..Self::default()
        })
    }

    /// The providers: OpenAI first (the default) when configured, the embedded model always.
    pub fn providers(&self) -> anyhow::Result<Providers> {
        let mut list: Vec<Arc<dyn ModelProvider>> = Vec::new();
        if let Some(o) = &self.openai {
            list.push(Arc::new(OpenAiProvider::new(o.clone())?));
        }
        let embedded = EmbeddedProvider::new(&self.model_path);
        let embedded = if self.embedded_sampling {
            embedded
        } else {
            embedded.greedy()
        };
        list.push(Arc::new(embedded));
        Ok(Providers::new(list))
    }
}

/// The services chat calls: remote when their URL is configured, else in-process.
#[derive(Clone)]
pub struct ChatDeps {
    pub conversation: GrpcChannel,
    pub files: GrpcChannel,
    pub ratelimit: GrpcChannel,
}

impl ChatDeps {
    /// From `CONFAB_CONVERSATION_URL`, `CONFAB_FILES_URL`, `CONFAB_RATELIMIT_URL`; each
    /// unset one runs in this process, built from its crate's `Config::from_env()`.
    pub async fn from_env() -> anyhow::Result<Self> {
        let c = Config::from_env()?;
        Self::from_config(&c).await
    }

    pub async fn from_config(c: &Config) -> anyhow::Result<Self> {
        use confab_common::channel::{in_process, remote};
        let ratelimit = match &c.ratelimit_url {
            Some(u) => remote("CONFAB_RATELIMIT_URL", u)?,
            None => {
                in_process(confab_ratelimit::server(confab_ratelimit::Config::from_env()?).await?)
            }
        };
        let files = match &c.files_url {
            Some(u) => remote("CONFAB_FILES_URL", u)?,
            None => in_process(confab_files::server(confab_files::Config::from_env()?).await?),
        };
        let conversation = match &c.conversation_url {
            Some(u) => remote("CONFAB_CONVERSATION_URL", u)?,
            None => in_process(
                confab_conversation::server_with_files(
                    confab_conversation::Config::from_env()?,
                    Some(files.clone()),
                )
                .await?,
            ),
        };
        Ok(Self {
            conversation,
            files,
            ratelimit,
        })
    }
}

/// The gRPC adapter: extracts identity, calls the domain service, converts results.
#[derive(Clone)]
pub struct ChatServiceImpl {
    chat: Arc<Chat>,
}

impl ChatServiceImpl {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let deps = ChatDeps::from_config(&config).await?;
        Self::with_deps(config, deps)
    }

    pub fn with_deps(config: Config, deps: ChatDeps) -> anyhow::Result<Self> {
        let providers = config.providers()?;
        Self::with_providers(config, providers, deps)
    }

    /// With explicit providers (tests, benchmarks).
    pub fn with_providers(
        config: Config,
        providers: Providers,
        deps: ChatDeps,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            chat: Arc::new(Chat::new(config, providers, deps)),
        })
    }

    pub fn chat(&self) -> &Arc<Chat> {
        &self.chat
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<chat::ChatEvent, Status>> + Send>>;

fn events(s: impl Stream<Item = chat::ChatEvent> + Send + 'static) -> EventStream {
    Box::pin(s.map(Ok))
}

/// Runs the preparation of a turn. When `detach`, it runs in its own task: a client
/// leaving while the turn is prepared (a refresh right after sending) does not lose it.
async fn until_done<T: Send + 'static>(
    detach: bool,
    f: impl std::future::Future<Output = Result<T, crate::error::ChatError>> + Send + 'static,
) -> Result<T, Status> {
    if detach {
        match tokio::spawn(f).await {
            Ok(r) => r.map_err(Status::from),
            Err(e) => Err(Status::internal(format!("the request failed: {e}"))),
        }
    } else {
        f.await.map_err(Status::from)
    }
}

fn is_terminal(e: &chat::ChatEvent) -> bool {
    matches!(
        e.event,
        Some(chat::chat_event::Event::Completed(_) | chat::chat_event::Event::Failed(_))
    )
}

#[tonic::async_trait]
impl ChatService for ChatServiceImpl {
    #[tracing::instrument(skip_all, fields(user))]
    async fn send_message(
        &self,
        request: Request<chat::SendMessageRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let id = Identity::from_request(&request)?;
        tracing::Span::current().record("user", id.user_id.as_str());
        let req = request.into_inner();
        let chat = self.chat.clone();
        let g = until_done(req.detach_on_disconnect, async move {
            chat.send(&id, req).await
        })
        .await?;
        Ok(Response::new(events(g.primary())))
    }

    #[tracing::instrument(skip_all, fields(user))]
    async fn send_message_simple(
        &self,
        request: Request<chat::SendMessageRequest>,
    ) -> Result<Response<chat::SendMessageSimpleResponse>, Status> {
        let id = Identity::from_request(&request)?;
        tracing::Span::current().record("user", id.user_id.as_str());
        let req = request.into_inner();
        let chat = self.chat.clone();
        let id2 = id.clone();
        let g = until_done(req.detach_on_disconnect, async move {
            chat.send(&id2, req).await
        })
        .await?;
        let mut stream = Box::pin(g.primary());
        let (mut user_id, mut assistant_id, mut title) = (String::new(), String::new(), None);
        let mut failed = None;
        while let Some(ev) = stream.next().await {
            let terminal = is_terminal(&ev);
            match ev.event {
                Some(chat::chat_event::Event::Started(s)) => {
                    user_id = s.user_message_id;
                    assistant_id = s.assistant_message_id;
                }
                Some(chat::chat_event::Event::TitleUpdated(t)) => title = Some(t.title),
                Some(chat::chat_event::Event::Failed(f)) => failed = Some(f),
                _ => {}
            }
            if terminal {
                break;
            }
        }
        if let Some(f) = failed {
            return Err(failure_status(&f));
        }
        let user_message = self
            .chat
            .get_message(&id, &g.conversation_id, &user_id)
            .await?;
        let assistant_message = self
            .chat
            .get_message(&id, &g.conversation_id, &assistant_id)
            .await?;
        Ok(Response::new(chat::SendMessageSimpleResponse {
            conversation_id: g.conversation_id.clone(),
            user_message: Some(user_message),
            assistant_message: Some(assistant_message),
            title: title.unwrap_or_default(),
        }))
    }

    async fn regenerate(
        &self,
        request: Request<chat::RegenerateRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let id = Identity::from_request(&request)?;
        let req = request.into_inner();
        let chat = self.chat.clone();
        let g = until_done(req.detach_on_disconnect, async move {
            chat.regenerate(&id, req).await
        })
        .await?;
        Ok(Response::new(events(g.primary())))
    }

    async fn edit_and_resend(
        &self,
        request: Request<chat::EditAndResendRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let id = Identity::from_request(&request)?;
        let req = request.into_inner();
        let chat = self.chat.clone();
        let g = until_done(req.detach_on_disconnect, async move {
            chat.edit_and_resend(&id, req).await
        })
        .await?;
        Ok(Response::new(events(g.primary())))
    }

    async fn attach(
        &self,
        request: Request<chat::AttachRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let id = Identity::from_request(&request)?;
        let req = request.into_inner();
        let g = self.chat.attach(&id, &req)?;
        Ok(Response::new(events(
            g.subscribe(req.after_sequence, false),
        )))
    }

    async fn stop_generation(
        &self,
        request: Request<chat::StopGenerationRequest>,
    ) -> Result<Response<chat::StopGenerationResponse>, Status> {
        let id = Identity::from_request(&request)?;
        let stopped = self
            .chat
            .stop(&id, &request.into_inner().generation_id)
            .await?;
        Ok(Response::new(chat::StopGenerationResponse { stopped }))
    }

    async fn list_models(
        &self,
        _request: Request<chat::ListModelsRequest>,
    ) -> Result<Response<chat::ListModelsResponse>, Status> {
        let providers = self.chat.providers();
        let default = providers.default_model();
        let models = providers
            .all()
            .into_iter()
            .map(|m| chat::ModelInfo {
                is_default: m.id == default,
                id: m.id,
                display_name: m.display_name,
                provider: m.provider.to_owned(),
                vision: m.vision,
                context_window: m.context_window,
                max_output_tokens: m.max_output_tokens,
                embedded: m.embedded,
            })
            .collect();
        Ok(Response::new(chat::ListModelsResponse { models }))
    }

    async fn get_quota(
        &self,
        request: Request<chat::GetQuotaRequest>,
    ) -> Result<Response<rl::Quota>, Status> {
        let id = Identity::from_request(&request)?;
        Ok(Response::new(self.chat.quota(&id).await?))
    }
}

/// The status SendMessageSimple answers with when the generation failed.
fn failure_status(f: &chat::Failed) -> Status {
    use chat::FailureCode as F;
    let code = match F::try_from(f.code).unwrap_or(F::Unspecified) {
        F::RateLimited | F::UpstreamRateLimited => tonic::Code::ResourceExhausted,
        F::UpstreamUnavailable | F::UpstreamError => tonic::Code::Unavailable,
        F::UpstreamTimeout => tonic::Code::DeadlineExceeded,
        F::ContextTooLarge => tonic::Code::InvalidArgument,
        F::Internal | F::Unspecified => tonic::Code::Internal,
    };
    let mut s = Status::new(code, f.message.clone());
    if f.retry_after_seconds > 0
        && let Ok(v) = f.retry_after_seconds.to_string().parse()
    {
        s.metadata_mut()
            .insert(confab_common::error::RETRY_AFTER_KEY, v);
    }
    s
}

/// The generated server around the service, ready for `Routes` or an in-process channel.
pub async fn server(config: Config) -> anyhow::Result<ChatServiceServer<ChatServiceImpl>> {
    Ok(ChatServiceServer::new(ChatServiceImpl::new(config).await?))
}

/// The server with explicit dependencies (the gateway shares its instances).
pub async fn server_with_deps(
    config: Config,
    deps: ChatDeps,
) -> anyhow::Result<ChatServiceServer<ChatServiceImpl>> {
    Ok(ChatServiceServer::new(ChatServiceImpl::with_deps(
        config, deps,
    )?))
}

/// Serves until shutdown, then drains. With `CONFAB_METRICS_ADDR`, also `GET /metrics`
/// (chat's metrics, and the rate limiter's when it runs in this process).
pub async fn run(launch: Launch, config: Config) -> anyhow::Result<()> {
    let in_process_limiter = config.ratelimit_url.is_none();
    let routes = Routes::new(server(config).await?);
    let metrics_task = match launch.server.metrics_addr {
        Some(addr) => Some(
            confab_telemetry::spawn_metrics_server(addr, move || {
                let mut registry = prometheus_client::registry::Registry::default();
                metrics::Metrics::global().register(&mut registry);
                if in_process_limiter {
                    confab_ratelimit::metrics::Metrics::global().register(&mut registry);
                }
                let mut out = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
                out
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on CONFAB_METRICS_ADDR {addr}: {e}"))?,
        ),
        None => None,
    };
    let result = GrpcServer::new(routes, &[confab_proto::service_names::CHAT])
        .await?
        .serve(
            launch.listener,
            launch.shutdown,
            launch.server.shutdown_grace,
        )
        .await;
    if let Some(t) = metrics_task {
        t.abort();
    }
    result?;
    Ok(())
}
