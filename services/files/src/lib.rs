//! Attachments: chunked upload, type by content, structured extraction, local or GridFS storage.
//!
//! `service::Files` is the domain (uploads, extraction, records); `FileServiceImpl` is the
//! thin gRPC adapter; `store::Store` hides the two storage backends.
#![forbid(unsafe_code)]

pub mod convert;
pub mod error;
pub mod service;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use confab_common::Identity;
use confab_common::binary::Launch;
use confab_common::config::{self, ConfigError};
use confab_common::server::GrpcServer;
use confab_proto::files::v1::file_service_server::{FileService, FileServiceServer};
use confab_proto::files::v1::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tracing::{Span, instrument};

pub use service::Files;

/// Where records and bytes are kept.
#[derive(Debug, Clone)]
pub enum Storage {
    /// `<data_dir>/files/` (blobs) + `<data_dir>/files.db` (SQLite).
    Local { data_dir: PathBuf },
    /// GridFS + the `files` collection.
    Mongo { uri: String, db_name: String },
}

/// Configuration read once at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub storage: Storage,
    /// `MAX_FILE_SIZE_MB` (default 10).
    pub max_file_bytes: u64,
    pub max_chunk_bytes: u32,
    /// Unfinished uploads are discarded after this.
    pub upload_ttl: Duration,
    pub max_uploads_per_user: usize,
    pub max_uploads_total: usize,
    /// Time budget for detecting + extracting one file.
    pub extract_timeout: Duration,
    pub max_concurrent_extractions: usize,
}

impl Config {
    /// Defaults with local storage under `data_dir`.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            storage: Storage::Local {
                data_dir: data_dir.into(),
            },
            max_file_bytes: 10 * 1024 * 1024,
            max_chunk_bytes: 1024 * 1024,
            upload_ttl: Duration::from_secs(30 * 60),
            max_uploads_per_user: 8,
            max_uploads_total: 512,
            extract_timeout: Duration::from_secs(20),
            max_concurrent_extractions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(1, 8),
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let mb: u64 = config::env_parse_range("MAX_FILE_SIZE_MB", 10, 1, 1024)?;
        let storage = match config::env_opt("MONGODB_URI")? {
            Some(uri) => {
                if !uri.starts_with("mongodb://") && !uri.starts_with("mongodb+srv://") {
                    return Err(ConfigError::new(
                        "MONGODB_URI",
                        "must start with mongodb:// or mongodb+srv://",
                    ));
                }
                Storage::Mongo {
                    uri,
                    db_name: config::env_opt("MONGODB_DB_NAME")?.unwrap_or_else(|| "confab".into()),
                }
            }
            None => Storage::Local {
                data_dir: config::data_dir()?,
            },
        };
        Ok(Self {
            storage,
            max_file_bytes: mb * 1024 * 1024,
            ..Self::local("./data")
        })
    }

    async fn open_store(&self) -> anyhow::Result<Arc<dyn store::Store>> {
        Ok(match &self.storage {
            Storage::Local { data_dir } => Arc::new(store::local::LocalStore::open(
                &data_dir.join("files"),
                &data_dir.join("files.db"),
            )?),
            Storage::Mongo { uri, db_name } => {
                Arc::new(store::mongo::MongoStore::connect(uri, db_name).await?)
            }
        })
    }
}

/// The gRPC adapter: extracts identity, calls the domain service, converts results.
#[derive(Clone)]
pub struct FileServiceImpl {
    files: Arc<Files>,
}

impl FileServiceImpl {
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let store = config.open_store().await?;
        Ok(Self::with_store(config, store))
    }

    pub fn with_store(config: Config, store: Arc<dyn store::Store>) -> Self {
        // The tokenizer tables take a moment to build: do it before the first upload.
        tokio::task::spawn_blocking(confab_extract::tokens::warm_up);
        Self {
            files: Arc::new(Files::new(config, store)),
        }
    }

    pub fn files(&self) -> &Arc<Files> {
        &self.files
    }
}

fn identify<T>(req: &Request<T>) -> Result<Identity, Status> {
    let id = Identity::from_request(req)?;
    Span::current().record("user", id.user_id.as_str());
    Ok(id)
}

const DOWNLOAD_CHUNK: usize = 256 * 1024;

#[tonic::async_trait]
impl FileService for FileServiceImpl {
    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn start_upload(
        &self,
        request: Request<StartUploadRequest>,
    ) -> Result<Response<StartUploadResponse>, Status> {
        let id = identify(&request)?;
        let r = request.into_inner();
        Ok(Response::new(self.files.start_upload(
            &id.user_id,
            &r.filename,
            r.declared_size,
        )?))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn upload_chunk(
        &self,
        request: Request<UploadChunkRequest>,
    ) -> Result<Response<UploadChunkResponse>, Status> {
        let id = identify(&request)?;
        let r = request.into_inner();
        let received = self
            .files
            .upload_chunk(&id.user_id, &r.upload_id, r.offset, &r.data)?;
        Ok(Response::new(UploadChunkResponse {
            received_bytes: received,
        }))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn finish_upload(
        &self,
        request: Request<FinishUploadRequest>,
    ) -> Result<Response<FinishUploadResponse>, Status> {
        let id = identify(&request)?;
        let r = request.into_inner();
        Ok(Response::new(
            self.files
                .finish_upload(&id.user_id, &r.upload_id, &r.sha256)
                .await?,
        ))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn abort_upload(
        &self,
        request: Request<AbortUploadRequest>,
    ) -> Result<Response<AbortUploadResponse>, Status> {
        let id = identify(&request)?;
        self.files
            .abort_upload(&id.user_id, &request.get_ref().upload_id);
        Ok(Response::new(AbortUploadResponse {}))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn get_file(
        &self,
        request: Request<GetFileRequest>,
    ) -> Result<Response<FileInfo>, Status> {
        let id = identify(&request)?;
        Ok(Response::new(
            self.files
                .get_file(&id.user_id, &request.get_ref().file_id)
                .await?,
        ))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn list_files(
        &self,
        request: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        let id = identify(&request)?;
        let r = request.into_inner();
        let (files, next_page_token) = self
            .files
            .list_files(&id.user_id, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(ListFilesResponse {
            files,
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn download_file(
        &self,
        request: Request<DownloadFileRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<DownloadFileChunk>>, Status> {
        let id = identify(&request)?;
        let (info, data) = self
            .files
            .download(&id.user_id, &request.get_ref().file_id)
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut file = Some(info);
            let mut offset = 0usize;
            loop {
                let end = (offset + DOWNLOAD_CHUNK).min(data.len());
                let chunk = DownloadFileChunk {
                    file: file.take(),
                    offset: offset as u64,
                    data: data.slice(offset..end).to_vec(),
                };
                // The client went away: stop.
                if tx.send(Ok(chunk)).await.is_err() || end >= data.len() {
                    break;
                }
                offset = end;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn get_extraction(
        &self,
        request: Request<GetExtractionRequest>,
    ) -> Result<Response<Extraction>, Status> {
        let id = identify(&request)?;
        Ok(Response::new(
            self.files
                .get_extraction(&id.user_id, &request.get_ref().file_id)
                .await?,
        ))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn get_thumbnail(
        &self,
        request: Request<GetThumbnailRequest>,
    ) -> Result<Response<Thumbnail>, Status> {
        let id = identify(&request)?;
        Ok(Response::new(
            self.files
                .get_thumbnail(&id.user_id, &request.get_ref().file_id)
                .await?,
        ))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn delete_file(
        &self,
        request: Request<DeleteFileRequest>,
    ) -> Result<Response<DeleteFileResponse>, Status> {
        let id = identify(&request)?;
        self.files
            .delete_file(&id.user_id, &request.get_ref().file_id)
            .await?;
        Ok(Response::new(DeleteFileResponse {}))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn get_prompt_parts(
        &self,
        request: Request<GetPromptPartsRequest>,
    ) -> Result<Response<GetPromptPartsResponse>, Status> {
        let id = identify(&request)?;
        let r = request.into_inner();
        let files = self
            .files
            .prompt_parts(&id.user_id, &r.file_ids, r.include_images, r.max_image_side)
            .await?;
        Ok(Response::new(GetPromptPartsResponse { files }))
    }

    #[instrument(skip_all, fields(user = tracing::field::Empty))]
    async fn release_files(
        &self,
        request: Request<ReleaseFilesRequest>,
    ) -> Result<Response<ReleaseFilesResponse>, Status> {
        let id = identify(&request)?;
        let reclaimed = self
            .files
            .release_files(&id.user_id, &request.get_ref().file_ids)
            .await?;
        Ok(Response::new(ReleaseFilesResponse { reclaimed }))
    }
}

/// The generated server around the service, ready for `Routes` or an in-process channel.
pub async fn server(config: Config) -> anyhow::Result<FileServiceServer<FileServiceImpl>> {
    let max = config.max_chunk_bytes as usize + 64 * 1024;
    Ok(FileServiceServer::new(FileServiceImpl::new(config).await?)
        .max_decoding_message_size(max.max(4 * 1024 * 1024)))
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
