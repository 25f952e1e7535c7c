//! The edge: one port for grpc-web (HTTP/1.1), native gRPC (h2c), the web client and
//! plain HTTP (`/auth/session`, `/health`, `/metrics`). Each backend service is reached
//! at its configured URL, or run in this process, so with nothing configured this
//! binary is the whole product.
//!
//! Map: [`config`] (environment), [`auth`] (session tokens, OIDC, client address),
//! [`proxy`] (generic forwarding of public RPCs), [`http`] (plain HTTP and static files),
//! [`health`], [`metrics`], and [`server`] (the listener, limits and graceful drain).
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod health;
pub mod http;
pub mod metrics;
pub mod proxy;
pub mod server;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use confab_common::binary::Launch;
use confab_common::config::{ConfigError, ServiceUrls};
use confab_common::{GrpcChannel, Shutdown, channel};
use confab_proto::service_names;
use tokio::net::TcpListener;

pub use config::EdgeConfig;
pub use health::Upstream;

/// Everything the gateway binary reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub edge: EdgeConfig,
    pub urls: ServiceUrls,
    /// Configurations of the services that run in this process (`None` when remote).
    pub chat: Option<confab_chat::Config>,
    pub conversation: Option<confab_conversation::Config>,
    pub files: Option<confab_files::Config>,
    pub ratelimit: Option<confab_ratelimit::Config>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let urls = ServiceUrls::from_env()?;
        Ok(Self {
            edge: EdgeConfig::from_env()?,
            chat: urls
                .chat
                .is_none()
                .then(confab_chat::Config::from_env)
                .transpose()?,
            conversation: urls
                .conversation
                .is_none()
                .then(confab_conversation::Config::from_env)
                .transpose()?,
            files: urls
                .files
                .is_none()
                .then(confab_files::Config::from_env)
                .transpose()?,
            ratelimit: urls
                .ratelimit
                .is_none()
                .then(confab_ratelimit::Config::from_env)
                .transpose()?,
            urls,
        })
    }
}

/// The four backend services, each remote or in-process.
#[derive(Clone)]
pub struct Upstreams {
    pub chat: Upstream,
    pub conversation: Upstream,
    pub files: Upstream,
    pub ratelimit: Upstream,
}

fn remote(
    name: &'static str,
    service: &'static str,
    var: &str,
    url: &str,
) -> Result<Upstream, ConfigError> {
    Ok(Upstream {
        name,
        service,
        channel: channel::remote(var, url)?,
        url: Some(url.to_owned()),
    })
}

fn local(name: &'static str, service: &'static str, channel: GrpcChannel) -> Upstream {
    Upstream {
        name,
        service,
        channel,
        url: None,
    }
}

impl Upstreams {
    /// Builds each in-process service once (ratelimit → files → conversation → chat),
    /// sharing the same instances between the gateway and the services that call them.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let urls = &config.urls;
        let ratelimit = match (&urls.ratelimit, &config.ratelimit) {
            (Some(url), _) => remote(
                "ratelimit",
                service_names::RATELIMIT,
                "CONFAB_RATELIMIT_URL",
                url,
            )?,
            (None, c) => local(
                "ratelimit",
                service_names::RATELIMIT,
                channel::in_process(
                    confab_ratelimit::server(match c {
                        Some(c) => c.clone(),
                        None => confab_ratelimit::Config::from_env()?,
                    })
                    .await?,
                ),
            ),
        };
        let files = match (&urls.files, &config.files) {
            (Some(url), _) => remote("files", service_names::FILES, "CONFAB_FILES_URL", url)?,
            (None, c) => local(
                "files",
                service_names::FILES,
                channel::in_process(
                    confab_files::server(match c {
                        Some(c) => c.clone(),
                        None => confab_files::Config::from_env()?,
                    })
                    .await?,
                ),
            ),
        };
        let conversation = match (&urls.conversation, &config.conversation) {
            (Some(url), _) => remote(
                "conversation",
                service_names::CONVERSATION,
                "CONFAB_CONVERSATION_URL",
                url,
            )?,
            (None, c) => local(
                "conversation",
                service_names::CONVERSATION,
                channel::in_process(
                    confab_conversation::server_with_files(
                        match c {
                            Some(c) => c.clone(),
                            None => confab_conversation::Config::from_env()?,
                        },
                        Some(files.channel.clone()),
                    )
                    .await?,
                ),
            ),
        };
        let chat = match (&urls.chat, &config.chat) {
            (Some(url), _) => remote("chat", service_names::CHAT, "CONFAB_CHAT_URL", url)?,
            (None, c) => local(
                "chat",
                service_names::CHAT,
                channel::in_process(
                    confab_chat::server_with_deps(
                        match c {
                            Some(c) => c.clone(),
                            None => confab_chat::Config::from_env()?,
                        },
                        confab_chat::ChatDeps {
                            conversation: conversation.channel.clone(),
                            files: files.channel.clone(),
                            ratelimit: ratelimit.channel.clone(),
                        },
                    )
                    .await?,
                ),
            ),
        };
        Ok(Self {
            chat,
            conversation,
            files,
            ratelimit,
        })
    }
}

/// A gateway ready to serve.
pub struct Gateway {
    pub(crate) edge: EdgeConfig,
    pub(crate) upstreams: Upstreams,
    pub(crate) auth: Arc<auth::Authenticator>,
    pub(crate) metrics: Arc<metrics::Metrics>,
}

impl Gateway {
    pub async fn new(edge: EdgeConfig, upstreams: Upstreams) -> anyhow::Result<Self> {
        let auth = Arc::new(auth::Authenticator::from_config(&edge).await?);
        Ok(Self {
            edge,
            upstreams,
            auth,
            metrics: Arc::new(metrics::Metrics::new()),
        })
    }

    pub(crate) fn channels(&self) -> HashMap<&'static str, GrpcChannel> {
        HashMap::from([
            (service_names::CHAT, self.upstreams.chat.channel.clone()),
            (
                service_names::CONVERSATION,
                self.upstreams.conversation.channel.clone(),
            ),
            (service_names::FILES, self.upstreams.files.channel.clone()),
        ])
    }

    /// Serves until `shutdown`, then drains for at most `grace`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: Shutdown,
        grace: Duration,
    ) -> anyhow::Result<()> {
        server::serve(self, listener, shutdown, grace).await
    }
}

pub async fn run(launch: Launch, config: Config) -> anyhow::Result<()> {
    let upstreams = Upstreams::build(&config).await?;
    let gateway = Gateway::new(config.edge, upstreams).await?;
    gateway
        .serve(
            launch.listener,
            launch.shutdown,
            launch.server.shutdown_grace,
        )
        .await
}
