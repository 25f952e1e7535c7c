//! The edge: one port for grpc-web, native gRPC, the web client and plain HTTP.
//! Each backend service is reached at its configured URL, or run in this process, so
//! with nothing configured this binary is the whole product.
#![forbid(unsafe_code)]

use confab_common::binary::Launch;
use confab_common::config::ConfigError;
use confab_common::server::GrpcServer;
use confab_proto::service_names;
use tonic::service::Routes;

#[derive(Debug, Clone)]
pub struct Config {
    pub chat: confab_chat::Config,
    pub conversation: confab_conversation::Config,
    pub files: confab_files::Config,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            chat: confab_chat::Config::from_env()?,
            conversation: confab_conversation::Config::from_env()?,
            files: confab_files::Config::from_env()?,
        })
    }
}

pub async fn run(launch: Launch, config: Config) -> anyhow::Result<()> {
    let routes = Routes::new(confab_chat::server(config.chat).await?)
        .add_service(confab_conversation::server(config.conversation).await?)
        .add_service(confab_files::server(config.files).await?);
    GrpcServer::new(
        routes,
        &[
            service_names::CHAT,
            service_names::CONVERSATION,
            service_names::FILES,
        ],
    )
    .await?
    .serve(
        launch.listener,
        launch.shutdown,
        launch.server.shutdown_grace,
    )
    .await?;
    Ok(())
}
