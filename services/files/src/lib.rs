//! Attachments: chunked upload, type by content, structured extraction, local or GridFS storage.
#![forbid(unsafe_code)]

use confab_common::binary::Launch;
use confab_common::config::ConfigError;
use confab_common::server::GrpcServer;
use confab_proto::files::v1::file_service_server::{FileService, FileServiceServer};
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
pub struct FileServiceImpl {
    _config: Config,
}

impl FileServiceImpl {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        Ok(Self { _config: config })
    }
}

#[tonic::async_trait]
impl FileService for FileServiceImpl {}

/// The generated server around the service, ready for `Routes` or an in-process channel.
pub async fn server(config: Config) -> anyhow::Result<FileServiceServer<FileServiceImpl>> {
    Ok(FileServiceServer::new(FileServiceImpl::new(config).await?))
}

/// Serves until shutdown, then drains.
pub async fn run(launch: Launch, config: Config) -> anyhow::Result<()> {
    let routes = Routes::new(server(config).await?);
    GrpcServer::new(routes, &[confab_proto::service_names::FILES])
        .await?
        .serve(
            launch.listener,
            launch.shutdown,
            launch.server.shutdown_grace,
        )
        .await?;
    Ok(())
}
