//! One atomic quota decision per request: requests/minute, concurrent streams and a daily token budget, in-process or on Redis.
#![forbid(unsafe_code)]

use confab_common::binary::Launch;
use confab_common::config::ConfigError;
use confab_common::server::GrpcServer;
use confab_proto::ratelimit::v1::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
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
pub struct RateLimitServiceImpl {
    _config: Config,
}

impl RateLimitServiceImpl {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        Ok(Self { _config: config })
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimitServiceImpl {}

/// The generated server around the service, ready for `Routes` or an in-process channel.
pub async fn server(
    config: Config,
) -> anyhow::Result<RateLimitServiceServer<RateLimitServiceImpl>> {
    Ok(RateLimitServiceServer::new(
        RateLimitServiceImpl::new(config).await?,
    ))
}

/// Serves until shutdown, then drains.
pub async fn run(launch: Launch, config: Config) -> anyhow::Result<()> {
    let routes = Routes::new(server(config).await?);
    GrpcServer::new(routes, &[confab_proto::service_names::RATELIMIT])
        .await?
        .serve(
            launch.listener,
            launch.shutdown,
            launch.server.shutdown_grace,
        )
        .await?;
    Ok(())
}
