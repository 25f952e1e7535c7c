//! FileService tests: a generated corpus through a real gRPC server on port 0, hostile
//! files, and one storage contract suite run against both backends.

mod contract;
mod extraction;
mod hostile;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use confab_common::Identity;
use confab_common::Shutdown;
use confab_common::server::GrpcServer;
use confab_common::testing::{connect, local_listener};
use confab_files::store::Store;
use confab_files::store::local::LocalStore;
use confab_files::{Config, FileServiceImpl, Files};
use confab_proto::files::v1::file_service_client::FileServiceClient;
use confab_proto::files::v1::file_service_server::FileServiceServer;
use confab_proto::files::v1::*;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub type Client = FileServiceClient<Channel>;

pub struct App {
    pub client: Client,
    pub files: Arc<Files>,
    pub store: Arc<dyn Store>,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn local_store(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(LocalStore::open(&dir.join("files"), &dir.join("files.db")).unwrap())
}

/// A server with local storage in a fresh directory.
pub async fn spawn_app() -> App {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tune: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    spawn_app_on(dir, store, tune).await
}

pub async fn spawn_app_on(
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    tune: impl FnOnce(&mut Config),
) -> App {
    let mut config = Config::local(dir.path());
    tune(&mut config);
    let svc = FileServiceImpl::with_store(config, store.clone());
    let files = svc.files().clone();
    let routes =
        tonic::service::Routes::new(FileServiceServer::new(svc).max_decoding_message_size(8 << 20));
    let (listener, addr) = local_listener().await;
    let shutdown = Shutdown::new();
    let server = GrpcServer::new(routes, &[confab_proto::service_names::FILES])
        .await
        .unwrap();
    let s = shutdown.clone();
    tokio::spawn(async move { server.serve(listener, s, Duration::from_secs(1)).await });
    let client = FileServiceClient::new(connect(addr).await).max_decoding_message_size(64 << 20);
    App {
        client,
        files,
        store,
        shutdown,
        _dir: dir,
    }
}

pub fn req<T>(user: &str, msg: T) -> tonic::Request<T> {
    Identity::user(user).request(msg)
}

pub const CHUNK: usize = 256 * 1024;

pub async fn upload(
    c: &mut Client,
    user: &str,
    name: &str,
    data: &[u8],
) -> Result<FinishUploadResponse, Status> {
    let start = c
        .start_upload(req(
            user,
            StartUploadRequest {
                filename: name.into(),
                declared_size: data.len() as u64,
                declared_content_type: String::new(),
            },
        ))
        .await?
        .into_inner();
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        c.upload_chunk(req(
            user,
            UploadChunkRequest {
                upload_id: start.upload_id.clone(),
                offset: (i * CHUNK) as u64,
                data: chunk.to_vec(),
            },
        ))
        .await?;
    }
    c.finish_upload(req(
        user,
        FinishUploadRequest {
            upload_id: start.upload_id,
            sha256: String::new(),
        },
    ))
    .await
    .map(|r| r.into_inner())
}

pub async fn upload_ok(c: &mut Client, user: &str, name: &str, data: &[u8]) -> FileInfo {
    upload(c, user, name, data)
        .await
        .unwrap_or_else(|e| panic!("upload of {name} failed: {e:?}"))
        .file
        .unwrap()
}

pub async fn extraction(c: &mut Client, user: &str, id: &str) -> Extraction {
    c.get_extraction(req(user, GetExtractionRequest { file_id: id.into() }))
        .await
        .unwrap()
        .into_inner()
}

pub fn assert_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, needle: &str) -> Status {
    let e = r.expect_err("expected an error");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().to_lowercase().contains(&needle.to_lowercase()),
        "message {:?} should mention {needle:?}",
        e.message()
    );
    e
}

pub async fn download(
    c: &mut Client,
    user: &str,
    id: &str,
) -> Result<(Option<FileInfo>, Vec<u8>), Status> {
    let mut stream = c
        .download_file(req(user, DownloadFileRequest { file_id: id.into() }))
        .await?
        .into_inner();
    let mut data = Vec::new();
    let mut info = None;
    while let Some(chunk) = stream.message().await? {
        assert_eq!(chunk.offset as usize, data.len());
        if chunk.file.is_some() {
            assert!(info.is_none(), "file info only on the first chunk");
            info = chunk.file;
        }
        data.extend_from_slice(&chunk.data);
    }
    Ok((info, data))
}
