//! Where bytes and records live. Blobs are content-addressed by sha256 and shared by every
//! record with those bytes; records are per user. Two implementations pass one contract
//! suite: local (directory + SQLite) and MongoDB (GridFS + `files` collection).
//!
//! Uploads in progress live here too (a record per upload, its bytes as chunks), never in
//! a process: any replica accepts any chunk and any replica finishes the upload.

pub mod local;
pub mod mongo;

use bytes::Bytes;
use confab_proto::files::v1::{Extraction, FileInfo, FinishUploadResponse, Thumbnail};

pub type StoreResult<T> = anyhow::Result<T>;

/// A stored file: metadata, what extraction produced, and the preview.
#[derive(Debug, Clone)]
pub struct FileRecord {
    pub user_id: String,
    pub info: FileInfo,
    pub extraction: Extraction,
    pub thumbnail: Option<Thumbnail>,
}

/// An upload that has started and not yet expired.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRecord {
    pub id: String,
    pub user_id: String,
    pub filename: String,
    /// 0 when the client did not say.
    pub declared: u64,
    /// Unix ms; after it the upload (or its remembered outcome) is gone.
    pub expires_at_ms: i64,
    pub state: UploadState,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UploadState {
    /// Accepting chunks.
    Open,
    /// One request holds the claim to assemble it (until the claim's time passes).
    Finishing,
    /// Finished; the outcome is kept so a retried FinishUpload gets the same answer.
    Done(Result<FinishUploadResponse, String>),
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

    /// Stores a new upload (state `Open`).
    async fn create_upload(&self, upload: &UploadRecord) -> StoreResult<()>;
    async fn get_upload(&self, id: &str) -> StoreResult<Option<UploadRecord>>;
    /// Uploads still open or finishing at `now_ms`: (this user's, everyone's).
    async fn count_uploads(&self, user_id: &str, now_ms: i64) -> StoreResult<(u64, u64)>;
    /// Bytes received so far: the end of the last chunk.
    async fn received(&self, upload_id: &str) -> StoreResult<u64>;
    /// Stores `data` as the chunk starting at `start` while the upload is open. False when a
    /// chunk already starts there (another request appended first) or the upload is not
    /// open: the caller looks again. Chunks only ever start at the current end, so this one
    /// uniqueness rule keeps them contiguous under concurrent writers.
    async fn put_chunk(&self, upload_id: &str, start: u64, data: Bytes) -> StoreResult<bool>;
    /// The received bytes in `[from, to)`.
    async fn read_chunks(&self, upload_id: &str, from: u64, to: u64) -> StoreResult<Bytes>;
    /// Open (or finishing with a claim older than `now_ms`) → finishing until `until_ms`.
    /// True when this caller now holds the claim.
    async fn claim_upload(
        &self,
        id: &str,
        user_id: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool>;
    /// Finishing → open again (the finish failed in a way worth retrying).
    async fn release_upload(&self, id: &str) -> StoreResult<()>;
    /// Finishing → done: keeps the outcome until `expires_at_ms`, drops the chunks.
    async fn complete_upload(
        &self,
        id: &str,
        outcome: &Result<FinishUploadResponse, String>,
        expires_at_ms: i64,
    ) -> StoreResult<()>;
    /// Removes this user's upload and its chunks (missing is not an error).
    async fn delete_upload(&self, id: &str, user_id: &str) -> StoreResult<()>;
    /// Removes uploads and chunks that expired before `now_ms`; how many uploads went.
    async fn delete_expired_uploads(&self, now_ms: i64) -> StoreResult<u64>;
}
