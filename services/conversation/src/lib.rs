//! Conversations and messages: history, search and per-user isolation, on SQLite
//! (embedded default, `$CONFAB_DATA_DIR/conversation.db`) or MongoDB (`MONGODB_URI`).
//!
//! Layers: [`ConversationServiceImpl`] (gRPC adapter: identity in, status out) →
//! [`service::Conversations`] (validation, limits, pagination, export, file release) →
//! [`store::ConversationStore`] (SQLite or MongoDB, one contract test suite).
//!
//! Listing semantics: conversations are ordered by last activity (`updated_at`, then id)
//! and paginated by keyset. A walk through the pages returns every conversation that
//! existed when it started exactly once, unless it gets new activity during the walk:
//! then it moves to the head (seen on the next refresh) and is not repeated. New
//! conversations appear at the head, never inside later pages.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use confab_common::binary::Launch;
use confab_common::config::{self, ConfigError};
use confab_common::server::GrpcServer;
use confab_common::{GrpcChannel, Identity};
use confab_proto::conversation::v1::conversation_service_server::{
    ConversationService, ConversationServiceServer,
};
use confab_proto::conversation::v1::*;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

pub mod clock;
pub mod error;
pub mod export;
pub mod model;
pub mod plan;
pub mod search;
pub mod service;
pub mod store;

pub use error::ConversationError;
pub use service::Conversations;
pub use store::{ConversationStore, MongoStore, SqliteStore};

/// Where conversations are stored.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `dir/conversation.db`.
    Sqlite {
        dir: PathBuf,
    },
    Mongo {
        uri: String,
        db_name: String,
    },
}

/// Configuration read once at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub backend: Backend,
    /// `CONFAB_FILES_URL`: the file service to release attachments to on delete.
    pub files_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self::sqlite("./data")
    }
}

/// MongoDB database names: 1–63 characters, none of `/\. "$`.
fn valid_db_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && !name.chars().any(|c| "/\\. \"$\0".contains(c))
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let files_url = config::env_url("CONFAB_FILES_URL")?;
        let backend = match config::env_opt("MONGODB_URI")? {
            Some(uri) => {
                if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
                    return Err(ConfigError::new(
                        "MONGODB_URI",
                        "must start with mongodb:// or mongodb+srv://",
                    ));
                }
                let db_name =
                    config::env_opt("MONGODB_DB_NAME")?.unwrap_or_else(|| "confab".into());
                if !valid_db_name(&db_name) {
                    return Err(ConfigError::new(
                        "MONGODB_DB_NAME",
                        format!(
                            "{db_name:?} is not a valid database name (1-63 characters, none of /\\. \"$)"
                        ),
                    ));
                }
                Backend::Mongo { uri, db_name }
            }
            None => Backend::Sqlite {
                dir: config::data_dir()?,
            },
        };
        Ok(Self { backend, files_url })
    }

    pub fn sqlite(dir: impl Into<PathBuf>) -> Self {
        Self {
            backend: Backend::Sqlite { dir: dir.into() },
            files_url: None,
        }
    }

    pub fn mongo(uri: impl Into<String>, db_name: impl Into<String>) -> Self {
        Self {
            backend: Backend::Mongo {
                uri: uri.into(),
                db_name: db_name.into(),
            },
            files_url: None,
        }
    }
}

/// Opens the configured store (migrations / indexes applied).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ConversationStore>> {
    Ok(match &config.backend {
        Backend::Sqlite { dir } => {
            std::fs::create_dir_all(dir)?;
            Arc::new(SqliteStore::open(dir.join("conversation.db")).await?)
        }
        Backend::Mongo { uri, db_name } => Arc::new(MongoStore::connect(uri, db_name).await?),
    })
}

/// The gRPC adapter: extracts identity, calls the domain service, converts results.
#[derive(Debug, Clone)]
pub struct ConversationServiceImpl {
    inner: Arc<Conversations>,
}

impl ConversationServiceImpl {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let files = match &config.files_url {
            Some(url) => Some(confab_common::channel::remote("CONFAB_FILES_URL", url)?),
            None => None,
        };
        Self::with_files(config, files).await
    }

    pub async fn with_files(config: Config, files: Option<GrpcChannel>) -> anyhow::Result<Self> {
        let store = open_store(&config).await?;
        Ok(Self::from_domain(Conversations::new(store, files)))
    }

    pub fn from_domain(inner: Conversations) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

fn ok<T>(r: Result<T, ConversationError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl ConversationService for ConversationServiceImpl {
    async fn create_conversation(
        &self,
        req: Request<CreateConversationRequest>,
    ) -> Result<Response<Conversation>, Status> {
        let user = Identity::from_request(&req)?;
        ok(self
            .inner
            .create_conversation(&user, req.into_inner())
            .await)
    }

    async fn list_conversations(
        &self,
        req: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let user = Identity::from_request(&req)?;
        ok(self.inner.list_conversations(&user, req.into_inner()).await)
    }

    async fn get_conversation(
        &self,
        req: Request<GetConversationRequest>,
    ) -> Result<Response<Conversation>, Status> {
        let user = Identity::from_request(&req)?;
        ok(self
            .inner
            .get_conversation(&user, &req.get_ref().conversation_id)
            .await)
    }

    async fn update_conversation(
        &self,
        req: Request<UpdateConversationRequest>,
    ) -> Result<Response<Conversation>, Status> {
        let user = Identity::from_request(&req)?;
        ok(self
            .inner
            .update_conversation(&user, req.into_inner())
            .await)
    }

    async fn delete_conversation(
        &self,
        req: Request<DeleteConversationRequest>,
    ) -> Result<Response<DeleteConversationResponse>, Status> {
        let user = Identity::from_request(&req)?;
        ok(self
            .inner
            .delete_conversation(&user, &req.get_ref().conversation_id)
            .await
            .map(|released_file_ids| DeleteConversationResponse { released_file_ids }))
    }

    async fn list_messages(
        &self,
        req: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let user = Identity::from_request(&req)?;
        ok(self.inner.list_messages(&user, req.into_inner()).await)
    }

    async fn get_message(
        &self,
        req: Request<GetMessageRequest>,
    ) -> Result<Response<Message>, Status> {
        let user = Identity::from_request(&req)?;
        let r = req.get_ref();
        ok(self
            .inner
            .get_message(&user, &r.conversation_id, &r.message_id)
            .await)
    }

    async fn search_conversations(
        &self,
        req: Request<SearchConversationsRequest>,
    ) -> Result<Response<SearchConversationsResponse>, Status> {
        let user = Identity::from_request(&req)?;
        let r = req.get_ref();
        ok(self.inner.search(&user, &r.query, r.page_size).await)
    }

    async fn export_conversation(
        &self,
        req: Request<ExportConversationRequest>,
    ) -> Result<Response<ExportConversationResponse>, Status> {
        let user = Identity::from_request(&req)?;
        let r = req.get_ref();
        ok(self.inner.export(&user, &r.conversation_id, r.format).await)
    }

    async fn append_message(
        &self,
        req: Request<AppendMessageRequest>,
    ) -> Result<Response<Message>, Status> {
        let user = Identity::from_request(&req)?;
        ok(self.inner.append_message(&user, req.into_inner()).await)
    }

    async fn update_message(
        &self,
        req: Request<UpdateMessageRequest>,
    ) -> Result<Response<Message>, Status> {
        let user = Identity::from_request(&req)?;
        ok(self.inner.update_message(&user, req.into_inner()).await)
    }

    async fn supersede_messages(
        &self,
        req: Request<SupersedeMessagesRequest>,
    ) -> Result<Response<SupersedeMessagesResponse>, Status> {
        let user = Identity::from_request(&req)?;
        ok(self
            .inner
            .supersede_messages(&user, req.into_inner())
            .await
            .map(|superseded_message_ids| SupersedeMessagesResponse {
                superseded_message_ids,
            }))
    }
}

/// The generated server around the service (files released through `CONFAB_FILES_URL` when set).
pub async fn server(
    config: Config,
) -> anyhow::Result<ConversationServiceServer<ConversationServiceImpl>> {
    Ok(ConversationServiceServer::new(
        ConversationServiceImpl::new(config).await?,
    ))
}

/// The server with an explicit file-service channel (the gateway wires the in-process one).
pub async fn server_with_files(
    config: Config,
    files: Option<GrpcChannel>,
) -> anyhow::Result<ConversationServiceServer<ConversationServiceImpl>> {
    Ok(ConversationServiceServer::new(
        ConversationServiceImpl::with_files(config, files).await?,
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
