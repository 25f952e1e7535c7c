//! Upload sessions kept in the store, not in this process: any replica accepts any chunk
//! (appended at the current end, with the store refusing a second chunk at one offset), any
//! replica finishes (one claims the upload, assembles, verifies, extracts, stores), and the
//! outcome is remembered so a retried finish on another replica gets the same answer.
//! Memory per upload in flight is one chunk; finishing holds one file, a bounded number at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use confab_proto::files::v1::{FinishUploadResponse, StartUploadResponse};

use super::{Files, sanitize_filename, too_big};
use crate::error::{FileError, Result, human_size};
use crate::store::{UploadRecord, UploadState};

const GONE: FileError = FileError::NotFound("upload (it may have expired)");
/// Attempts at appending when other requests for the same upload keep appending first.
const APPEND_ATTEMPTS: usize = 8;
/// How often one replica looks for expired uploads (at most; any replica may).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long a finish waits for another request finishing the same upload.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Ids this service issues: `up_` + 32 hex digits. Anything else cannot name an upload.
fn valid_id(id: &str) -> bool {
    id.len() == 35 && id.starts_with("up_") && id[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Files {
    /// Removes expired uploads when this replica has not looked for a while. Expired ones
    /// are already invisible (every read checks the time); this reclaims their bytes.
    async fn sweep(&self, now_ms: i64) {
        let every = ms(SWEEP_EVERY.min(self.config.upload_ttl));
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < every
            || self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self.store.delete_expired_uploads(now_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "removed expired uploads"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "sweeping expired uploads failed"),
        }
    }

    /// The caller's upload when it exists and has not expired.
    async fn live_upload(&self, user_id: &str, id: &str, now_ms: i64) -> Result<UploadRecord> {
        if !valid_id(id) {
            return Err(GONE);
        }
        match self
            .store
            .get_upload(id)
            .await
            .map_err(FileError::storage)?
        {
            Some(u) if u.user_id == user_id && u.expires_at_ms > now_ms => Ok(u),
            _ => Err(GONE),
        }
    }

    pub async fn start_upload(
        &self,
        user_id: &str,
        filename: &str,
        declared_size: u64,
    ) -> Result<StartUploadResponse> {
        let limit = self.config.max_file_bytes;
        if declared_size > limit {
            return Err(too_big(declared_size, limit, false));
        }
        let now = self.clock.now_ms();
        self.sweep(now).await;
        // Counted in the store, so the caps hold across replicas (two starts racing on
        // different replicas may both pass the last free slot; the cap is a guard, not a quota).
        let (mine, total) = self
            .store
            .count_uploads(user_id, now)
            .await
            .map_err(FileError::storage)?;
        if mine >= self.config.max_uploads_per_user as u64 {
            return Err(FileError::Exhausted(format!(
                "you have {mine} uploads in progress; finish or abort one before starting another"
            )));
        }
        if total >= self.config.max_uploads_total as u64 {
            return Err(FileError::Exhausted(
                "the server has too many uploads in progress; try again in a minute".into(),
            ));
        }
        let upload = UploadRecord {
            id: format!("up_{}", uuid::Uuid::new_v4().simple()),
            user_id: user_id.to_owned(),
            filename: sanitize_filename(filename),
            declared: declared_size,
            expires_at_ms: now + ms(self.config.upload_ttl),
            state: UploadState::Open,
        };
        self.store
            .create_upload(&upload)
            .await
            .map_err(FileError::storage)?;
        Ok(StartUploadResponse {
            upload_id: upload.id,
            max_chunk_bytes: self.config.max_chunk_bytes,
            max_file_bytes: limit,
            expires_at_ms: upload.expires_at_ms,
        })
    }

    /// Appends a chunk at `offset`; a retried chunk (already received, identical) is
    /// accepted. Returns the bytes received so far.
    pub async fn upload_chunk(
        &self,
        user_id: &str,
        upload_id: &str,
        offset: u64,
        data: Bytes,
    ) -> Result<u64> {
        if data.len() > self.config.max_chunk_bytes as usize {
            return Err(FileError::invalid(format!(
                "chunks may be at most {}; this one is {}",
                human_size(u64::from(self.config.max_chunk_bytes)),
                human_size(data.len() as u64)
            )));
        }
        for _ in 0..APPEND_ATTEMPTS {
            let now = self.clock.now_ms();
            if self.live_upload(user_id, upload_id, now).await?.state != UploadState::Open {
                return Err(GONE);
            }
            let received = self
                .store
                .received(upload_id)
                .await
                .map_err(FileError::storage)?;
            if offset > received {
                return Err(FileError::invalid(format!(
                    "chunk at offset {offset}, but only {received} bytes were received; send offset {received} next"
                )));
            }
            let overlap = (received - offset).min(data.len() as u64);
            if overlap > 0 {
                let stored = self
                    .store
                    .read_chunks(upload_id, offset, offset + overlap)
                    .await
                    .map_err(FileError::storage)?;
                if stored[..] != data[..overlap as usize] {
                    return Err(FileError::invalid(format!(
                        "the chunk at offset {offset} differs from the bytes already received there"
                    )));
                }
            }
            let new = data.slice(overlap as usize..);
            if new.is_empty() {
                return Ok(received);
            }
            let total = received + new.len() as u64;
            if total > self.config.max_file_bytes {
                self.store
                    .delete_upload(upload_id, user_id)
                    .await
                    .map_err(FileError::storage)?;
                return Err(too_big(total, self.config.max_file_bytes, true));
            }
            if self
                .store
                .put_chunk(upload_id, received, new)
                .await
                .map_err(FileError::storage)?
            {
                return Ok(total);
            }
            // Another request appended first (a retry racing on another replica), or the
            // upload closed: look again.
        }
        Err(FileError::Exhausted(
            "too many writes to this upload at once; send its chunks one after another".into(),
        ))
    }

    /// Idempotent; someone else's or an unknown upload is left alone.
    pub async fn abort_upload(&self, user_id: &str, upload_id: &str) -> Result<()> {
        if !valid_id(upload_id) {
            return Ok(());
        }
        self.store
            .delete_upload(upload_id, user_id)
            .await
            .map_err(FileError::storage)
    }

    pub async fn finish_upload(
        &self,
        user_id: &str,
        upload_id: &str,
        sha256: &str,
    ) -> Result<FinishUploadResponse> {
        // A claim outlives any finish that is still working (assembly + extraction budget),
        // and frees the upload for a retry when the replica holding it died.
        let claim = ms(self.config.extract_timeout * 2 + Duration::from_secs(30));
        let wait_until = tokio::time::Instant::now() + self.config.extract_timeout * 2;
        let upload = loop {
            let now = self.clock.now_ms();
            let upload = self.live_upload(user_id, upload_id, now).await?;
            if let UploadState::Done(outcome) = &upload.state {
                return outcome.clone().map_err(FileError::Invalid);
            }
            if self
                .store
                .claim_upload(upload_id, user_id, now, now + claim)
                .await
                .map_err(FileError::storage)?
            {
                break upload;
            }
            // Another request is finishing it (a retry on another replica): wait for its outcome.
            if tokio::time::Instant::now() >= wait_until {
                return Err(FileError::Exhausted(
                    "this upload is still being processed; ask again shortly".into(),
                ));
            }
            tokio::time::sleep(WAIT_POLL).await;
        };
        let result = self.assemble_and_store(&upload, sha256).await;
        let now = self.clock.now_ms();
        match &result {
            // A storage outage is worth retrying: the chunks stay, the upload opens again.
            Err(FileError::Storage(_) | FileError::Internal(_)) => {
                if let Err(e) = self.store.release_upload(upload_id).await {
                    tracing::warn!(error = %format!("{e:#}"), "releasing an upload failed");
                }
            }
            other => {
                let outcome = match other {
                    Ok(r) => Ok(r.clone()),
                    Err(e) => Err(e.to_string()),
                };
                let keep_until = now + ms(self.config.upload_ttl);
                self.store
                    .complete_upload(upload_id, &outcome, keep_until)
                    .await
                    .map_err(FileError::storage)?;
            }
        }
        result
    }

    async fn assemble_and_store(
        &self,
        upload: &UploadRecord,
        sha256: &str,
    ) -> Result<FinishUploadResponse> {
        let received = self
            .store
            .received(&upload.id)
            .await
            .map_err(FileError::storage)?;
        if upload.declared > 0 && upload.declared != received {
            return Err(FileError::invalid(format!(
                "received {received} bytes but {} were declared; the upload is incomplete",
                upload.declared
            )));
        }
        let _permit = self
            .assemblies
            .acquire()
            .await
            .map_err(|e| FileError::Internal(e.into()))?;
        let data = self
            .store
            .read_chunks(&upload.id, 0, received)
            .await
            .map_err(FileError::storage)?;
        self.store_upload(
            &upload.user_id,
            &upload.filename,
            upload.declared,
            sha256,
            data,
        )
        .await
    }
}
