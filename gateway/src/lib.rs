//! The edge: one port for grpc-web (HTTP/1.1), native gRPC (h2c), the web client and
//! plain HTTP (`/auth/session`, `/health`, `/metrics`). Each backend service is reached
//! at its configured URL, or run in this process (wired by `confab-compose`), so with
//! nothing configured this binary is the whole product.
//!
//! Map: [`config`] (environment), [`auth`] (session tokens, OIDC, client address),
//! [`proxy`] (generic forwarding of public RPCs), [`http`] (plain HTTP and static files),
//! [`health`], [`metrics`], and [`server`] (the listener, limits and graceful drain).
#![forbid(unsafe_code)]

pub mod auth;
pub mod budget;
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
use confab_common::config::ConfigError;
use confab_common::{GrpcChannel, Shutdown};
use confab_proto::service_names;
use tokio::net::TcpListener;

pub use config::EdgeConfig;
pub use health::Upstream;

/// Everything the gateway binary reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub edge: EdgeConfig,
    /// Where each backend service runs (`confab-compose`).
    pub services: confab_compose::Config,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            edge: EdgeConfig::from_env()?,
            services: confab_compose::Config::from_env()?,
        })
    }
}

/// The four backend services, each remote or in-process, as the gateway reaches them.
#[derive(Clone)]
pub struct Upstreams {
    pub chat: Upstream,
    pub conversation: Upstream,
    pub files: Upstream,
    pub ratelimit: Upstream,
}

fn upstream(s: confab_compose::Service) -> Upstream {
    Upstream {
        name: s.name,
        service: s.service,
        channel: s.channel,
        url: s.url,
    }
}

impl From<confab_compose::Services> for Upstreams {
    fn from(s: confab_compose::Services) -> Self {
        Self {
            chat: upstream(s.chat),
            conversation: upstream(s.backends.conversation),
            files: upstream(s.backends.files),
            ratelimit: upstream(s.backends.ratelimit),
        }
    }
}

impl Upstreams {
    /// Each service built once by the composition point, shared between the gateway and
    /// the services that call it.
    pub async fn build(config: &confab_compose::Config) -> anyhow::Result<Self> {
        Ok(confab_compose::Services::build(config).await?.into())
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
    let upstreams = Upstreams::build(&config.services).await?;
    let gateway = Gateway::new(config.edge, upstreams).await?;
    gateway
        .serve(
            launch.listener,
            launch.shutdown,
            launch.server.shutdown_grace,
        )
        .await
}
