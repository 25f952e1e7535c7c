//! Where bytes and records live. Blobs are content-addressed by sha256 and shared by every
//! record with those bytes; records are per user. Two implementations pass one contract
//! suite: local (directory + SQLite) and MongoDB (GridFS + `files` collection).

pub mod local;
pub mod mongo;

use bytes::Bytes;
use confab_proto::files::v1::{Extraction, FileInfo, Thumbnail};

pub type StoreResult<T> = anyhow::Result<T>;

/// A stored file: metadata, what extraction produced, and the preview.
#[derive(Debug, Clone)]
pub struct FileRecord {
    pub user_id: String,
    pub info: FileInfo,
    pub extraction: Extraction,
    pub thumbnail: Option<Thumbnail>,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn has_blob(&self, sha256: &str) -> StoreResult<bool>;
    /// Idempotent: storing bytes that exist is a no-op.
    async fn put_blob(&self, sha256: &str, data: Bytes) -> StoreResult<()>;
    async fn get_blob(&self, sha256: &str) -> StoreResult<Option<Bytes>>;
    /// Missing blobs are not an error.
    async fn delete_blob(&self, sha256: &str) -> StoreResult<()>;

    async fn insert_file(&self, record: &FileRecord) -> StoreResult<()>;
    async fn find_by_sha(&self, user_id: &str, sha256: &str) -> StoreResult<Option<FileInfo>>;
    async fn get_info(&self, user_id: &str, id: &str) -> StoreResult<Option<FileInfo>>;
    async fn get_extraction(&self, user_id: &str, id: &str) -> StoreResult<Option<Extraction>>;
    /// Outer `None`: no such file; inner `None`: no thumbnail.
    async fn get_thumbnail(
        &self,
        user_id: &str,
        id: &str,
    ) -> StoreResult<Option<Option<Thumbnail>>>;
    /// Newest first; `before_id` continues after that id.
    async fn list(
        &self,
        user_id: &str,
        before_id: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<FileInfo>>;
    /// Removes the record; returns its sha256 when it existed.
    async fn delete_file(&self, user_id: &str, id: &str) -> StoreResult<Option<String>>;
    /// Records (of any user) that point at these bytes.
    async fn blob_refs(&self, sha256: &str) -> StoreResult<u64>;
}
