//! Conversations and messages: history, search and per-user isolation, on SQLite (embedded default) or MongoDB.
#![forbid(unsafe_code)]

use confab_common::binary::Launch;
use confab_common::config::ConfigError;
use confab_common::server::GrpcServer;
use confab_proto::conversation::v1::conversation_service_server::{
    ConversationService, ConversationServiceServer,
};
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
pub struct ConversationServiceImpl {
    _config: Config,
}

impl ConversationServiceImpl {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        Ok(Self { _config: config })
    }
}

#[tonic::async_trait]
impl ConversationService for ConversationServiceImpl {}

/// The generated server around the service, ready for `Routes` or an in-process channel.
pub async fn server(
    config: Config,
) -> anyhow::Result<ConversationServiceServer<ConversationServiceImpl>> {
    Ok(ConversationServiceServer::new(
        ConversationServiceImpl::new(config).await?,
    ))
}

/// Serves until shutdown, then drains.
pub async fn run(launch: Launch, config: Config) -> anyhow::Result<()> {
    let routes = Routes::new(server(config).await?);
    GrpcServer::new(routes, &[confab_proto::service_names::CONVERSATION])
        .await?
        .serve(
            launch.listener,
            launch.shutdown,
            launch.server.shutdown_grace,
        )
        .await?;
    Ok(())
}
