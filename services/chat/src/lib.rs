//! Streaming answers from OpenAI-compatible or embedded models, with context planning, stop and regenerate.
#![forbid(unsafe_code)]

use confab_common::binary::Launch;
use confab_common::config::ConfigError;
use confab_common::server::GrpcServer;
use confab_proto::chat::v1::chat_service_server::{ChatService, ChatServiceServer};
use tonic::service::Routes;

/// Configuration read once at start.
#[derive(Debug, Clone, Default)]
pub struct Config {}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {})
    }
}

/// The gRPC adapter: extracts identity, calls the domain service, converts results.
#[derive(Debug, Clone)]
pub struct ChatServiceImpl {
    _config: Config,
}

impl ChatServiceImpl {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        Ok(Self { _config: config })
    }
}

#[tonic::async_trait]
impl ChatService for ChatServiceImpl {}

/// The generated server around the service, ready for `Routes` or an in-process channel.
pub async fn server(config: Config) -> anyhow::Result<ChatServiceServer<ChatServiceImpl>> {
    Ok(ChatServiceServer::new(ChatServiceImpl::new(config).await?))
}

/// Serves until shutdown, then drains.
pub async fn run(launch: Launch, config: Config) -> anyhow::Result<()> {
    let routes = Routes::new(server(config).await?);
    GrpcServer::new(routes, &[confab_proto::service_names::CHAT])
        .await?
        .serve(
            launch.listener,
            launch.shutdown,
            launch.server.shutdown_grace,
        )
        .await?;
    Ok(())
}
