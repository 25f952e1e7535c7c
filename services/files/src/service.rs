//! The domain: upload sessions, detection + extraction off the async runtime, dedup,
//! per-user records, reference-counted bytes. Never sees `tonic::Request`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use confab_proto::files::v1::{
    Extraction, ExtractionStatus, FileInfo, FilePromptParts, FinishUploadResponse,
    StartUploadResponse, TextPromptPart, Thumbnail,
};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::Config;
use confab_extract::detect::{self, Detected};
use confab_extract::extract::{self, Extracted, Limits};

use crate::convert;
use crate::error::{FileError, Result, human_size};
use crate::store::{FileRecord, Store};

const LOCK_STRIPES: usize = 64;
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 200;
pub const MAX_PROMPT_FILES: usize = 32;

struct Upload {
    user_id: String,
    filename: String,
    declared: u64,
    data: Vec<u8>,
    expires: Instant,
}

struct Finished {
    user_id: String,
    expires: Instant,
    outcome: std::result::Result<FinishUploadResponse, String>,
}

pub struct Files {
    config: Config,
    store: Arc<dyn Store>,
    uploads: Mutex<HashMap<String, Upload>>,
    finished: Mutex<HashMap<String, Finished>>,
    extractors: Arc<Semaphore>,
    blob_locks: Vec<tokio::sync::Mutex<()>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn sanitize_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." {
        "upload".to_owned()
    } else {
        clean.to_owned()
    }
}

fn too_big(size: u64, limit: u64, at_least: bool) -> FileError {
    FileError::invalid(format!(
        "the file is {}{}; the limit is {}",
        if at_least { "at least " } else { "" },
        human_size(size),
        human_size(limit)
    ))
}

impl Files {
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        let extractors = Arc::new(Semaphore::new(config.max_concurrent_extractions.max(1)));
        Self {
            config,
            store,
            uploads: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashMap::new()),
            extractors,
            blob_locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn blob_lock(&self, sha256: &str) -> &tokio::sync::Mutex<()> {
        let idx = usize::from_str_radix(sha256.get(..2).unwrap_or("0"), 16).unwrap_or(0);
        &self.blob_locks[idx % LOCK_STRIPES]
    }

    fn sweep(&self, now: Instant) {
        self.uploads.lock().retain(|_, u| u.expires > now);
        self.finished.lock().retain(|_, f| f.expires > now);
    }

    pub fn start_upload(
        &self,
        user_id: &str,
        filename: &str,
        declared_size: u64,
    ) -> Result<StartUploadResponse> {
        let limit = self.config.max_file_bytes;
        if declared_size > limit {
            return Err(too_big(declared_size, limit, false));
        }
        let now = Instant::now();
        self.sweep(now);
        let mut uploads = self.uploads.lock();
        let mine = uploads.values().filter(|u| u.user_id == user_id).count();
        if mine >= self.config.max_uploads_per_user {
            return Err(FileError::Exhausted(format!(
                "you have {mine} uploads in progress; finish or abort one before starting another"
            )));
        }
        if uploads.len() >= self.config.max_uploads_total {
            return Err(FileError::Exhausted(
                "the server has too many uploads in progress; try again in a minute".into(),
            ));
        }
        let id = format!("up_{}", uuid::Uuid::new_v4().simple());
        let ttl = self.config.upload_ttl;
        uploads.insert(
            id.clone(),
            Upload {
                user_id: user_id.to_owned(),
                filename: sanitize_filename(filename),
                declared: declared_size,
                data: Vec::with_capacity(declared_size.min(limit).min(16 << 20) as usize),
                expires: now + ttl,
            },
        );
        Ok(StartUploadResponse {
            upload_id: id,
            max_chunk_bytes: self.config.max_chunk_bytes,
            max_file_bytes: limit,
            expires_at_ms: now_ms() + ttl.as_millis() as i64,
        })
    }

    /// Appends a chunk at `offset`; a retried chunk (already received, identical) is accepted.
    pub fn upload_chunk(
        &self,
        user_id: &str,
        upload_id: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<u64> {
        if data.len() > self.config.max_chunk_bytes as usize {
            return Err(FileError::invalid(format!(
                "chunks may be at most {}; this one is {}",
                human_size(u64::from(self.config.max_chunk_bytes)),
                human_size(data.len() as u64)
            )));
        }
        let now = Instant::now();
        let mut uploads = self.uploads.lock();
        let upload = match uploads.get_mut(upload_id) {
            Some(u) if u.user_id == user_id && u.expires > now => u,
            _ => return Err(FileError::NotFound("upload (it may have expired)")),
        };
        let received = upload.data.len() as u64;
        if offset > received {
            return Err(FileError::invalid(format!(
                "chunk at offset {offset}, but only {received} bytes were received; send offset {received} next"
            )));
        }
        let start = offset as usize;
        let overlap = (received - offset).min(data.len() as u64) as usize;
        if upload.data[start..start + overlap] != data[..overlap] {
            return Err(FileError::invalid(format!(
                "the chunk at offset {offset} differs from the bytes already received there"
            )));
        }
        let new = &data[overlap..];
        let total = received + new.len() as u64;
        if total > self.config.max_file_bytes {
            let limit = self.config.max_file_bytes;
            uploads.remove(upload_id);
            return Err(too_big(total, limit, true));
        }
        upload.data.extend_from_slice(new);
        Ok(total)
    }

    pub fn abort_upload(&self, user_id: &str, upload_id: &str) {
        let mut uploads = self.uploads.lock();
        if uploads.get(upload_id).is_some_and(|u| u.user_id == user_id) {
            uploads.remove(upload_id);
        }
    }

    pub async fn finish_upload(
        &self,
        user_id: &str,
        upload_id: &str,
        sha256: &str,
    ) -> Result<FinishUploadResponse> {
        let now = Instant::now();
        if let Some(f) = self.finished.lock().get(upload_id)
            && f.user_id == user_id
            && f.expires > now
        {
            return f.outcome.clone().map_err(FileError::Invalid);
        }
        let upload = {
            let mut uploads = self.uploads.lock();
            match uploads.get(upload_id) {
                Some(u) if u.user_id == user_id && u.expires > now => uploads.remove(upload_id),
                _ => None,
            }
        }
        .ok_or(FileError::NotFound("upload (it may have expired)"))?;
        let (filename, declared, expires) =
            (upload.filename.clone(), upload.declared, upload.expires);
        let data = Bytes::from(upload.data);
        let result = self
            .store_upload(user_id, &filename, declared, sha256, data.clone())
            .await;
        match &result {
            // A storage outage is worth retrying: keep the bytes.
            Err(FileError::Storage(_) | FileError::Internal(_)) => {
                self.uploads.lock().insert(
                    upload_id.to_owned(),
                    Upload {
                        user_id: user_id.to_owned(),
                        filename,
                        declared,
                        data: data.to_vec(),
                        expires,
                    },
                );
            }
            other => {
                let outcome = match other {
                    Ok(r) => Ok(r.clone()),
                    Err(e) => Err(e.to_string()),
                };
                self.finished.lock().insert(
                    upload_id.to_owned(),
                    Finished {
                        user_id: user_id.to_owned(),
                        expires: now + self.config.upload_ttl,
                        outcome,
                    },
                );
            }
        }
        result
    }

    async fn store_upload(
        &self,
        user_id: &str,
        filename: &str,
        declared: u64,
        expected_sha: &str,
        data: Bytes,
    ) -> Result<FinishUploadResponse> {
        let size = data.len() as u64;
        if declared > 0 && declared != size {
            return Err(FileError::invalid(format!(
                "received {size} bytes but {declared} were declared; the upload is incomplete"
            )));
        }
        if size == 0 {
            return Err(FileError::invalid("the file is empty"));
        }
        let digest = {
            let data = data.clone();
            tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&data)))
                .await
                .map_err(|e| FileError::Internal(e.into()))?
        };
        let expected = expected_sha.trim().to_ascii_lowercase();
        if !expected.is_empty() && expected != digest {
            return Err(FileError::invalid(format!(
                "the sha256 of the received bytes is {digest}, not {expected}; the upload was corrupted"
            )));
        }
        if let Some(file) = self
            .store
            .find_by_sha(user_id, &digest)
            .await
            .map_err(FileError::storage)?
        {
            return Ok(FinishUploadResponse {
                file: Some(file),
                deduplicated: true,
            });
        }
        let (detected, extracted) = self.extract(data.clone(), filename.to_owned()).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let total_tokens = extracted.total_tokens();
        let part_count = if extracted.image.is_some() {
            1
        } else {
            extracted.parts.len() as u32
        };
        let info = FileInfo {
            id: id.clone(),
            filename: filename.to_owned(),
            mime_type: detected.mime().to_owned(),
            kind: convert::file_kind(extracted.kind) as i32,
            size_bytes: size,
            sha256: digest.clone(),
            created_at_ms: now_ms(),
            extraction_status: ExtractionStatus::Done as i32,
            image: extracted
                .image
                .as_ref()
                .map(|i| convert::image_info(i.info.clone())),
            part_count,
            token_count: total_tokens,
            extraction_error: String::new(),
            has_thumbnail: extracted
                .image
                .as_ref()
                .is_some_and(|i| i.thumbnail.is_some()),
        };
        let Extracted {
            kind,
            parts,
            warnings,
            image,
        } = extracted;
        let record = FileRecord {
            user_id: user_id.to_owned(),
            info: info.clone(),
            extraction: Extraction {
                file_id: id,
                kind: convert::file_kind(kind) as i32,
                parts: parts.into_iter().map(convert::part).collect(),
                total_tokens,
                warnings,
            },
            thumbnail: image.and_then(|i| i.thumbnail).map(convert::thumbnail),
        };
        {
            let _guard = self.blob_lock(&digest).lock().await;
            self.store
                .put_blob(&digest, data)
                .await
                .map_err(FileError::storage)?;
            self.store
                .insert_file(&record)
                .await
                .map_err(FileError::storage)?;
        }
        Ok(FinishUploadResponse {
            file: Some(info),
            deduplicated: false,
        })
    }

    /// Runs `f` on a blocking thread, holding an extraction permit, within the time budget.
    async fn bounded<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Limits) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let budget = self.config.extract_timeout;
        let permit = tokio::time::timeout(budget, self.extractors.clone().acquire_owned())
            .await
            .map_err(|_| {
                FileError::Exhausted(format!(
                    "the server is busy processing other files; try the {what} again shortly"
                ))
            })?
            .map_err(|e| FileError::Internal(e.into()))?;
        let task = tokio::task::spawn_blocking(move || {
            // Held until the work really ends, so runaway work still counts against the limit.
            let _permit = permit;
            let limits = Limits::new(budget);
            f(&limits)
        });
        match tokio::time::timeout(budget + Duration::from_secs(1), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(FileError::invalid(format!(
                "the file could not be processed ({what} failed: {join})"
            ))),
            Err(_) => Err(FileError::invalid(format!(
                "the file took longer than {} s to process; it may be corrupt or deliberately complex",
                budget.as_secs()
            ))),
        }
    }

    async fn extract(&self, data: Bytes, filename: String) -> Result<(Detected, Extracted)> {
        self.bounded("upload", move |limits| {
            let detected = detect::detect(&data, &filename)?;
            let extracted = extract::extract(detected, &data, limits)?;
            Ok((detected, extracted))
        })
        .await
    }

    pub async fn get_file(&self, user_id: &str, id: &str) -> Result<FileInfo> {
        self.store
            .get_info(user_id, id)
            .await
            .map_err(FileError::storage)?
            .ok_or(FileError::NotFound("file"))
    }

    pub async fn list_files(
        &self,
        user_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<FileInfo>, String)> {
        let size = match page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let before = if page_token.is_empty() {
            None
        } else if uuid::Uuid::parse_str(page_token).is_ok() {
            Some(page_token)
        } else {
            return Err(FileError::invalid("the page token is not valid"));
        };
        let mut files = self
            .store
            .list(user_id, before, size + 1)
            .await
            .map_err(FileError::storage)?;
        let next = if files.len() > size {
            files.truncate(size);
            files.last().map(|f| f.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((files, next))
    }

    pub async fn download(&self, user_id: &str, id: &str) -> Result<(FileInfo, Bytes)> {
        let info = self.get_file(user_id, id).await?;
        let data = self
            .store
            .get_blob(&info.sha256)
            .await
            .map_err(FileError::storage)?
            .ok_or_else(|| {
                FileError::Internal(anyhow::anyhow!("blob {} is missing", info.sha256))
            })?;
        Ok((info, data))
    }

    pub async fn get_extraction(&self, user_id: &str, id: &str) -> Result<Extraction> {
        self.store
            .get_extraction(user_id, id)
            .await
            .map_err(FileError::storage)?
            .ok_or(FileError::NotFound("file"))
    }

    pub async fn get_thumbnail(&self, user_id: &str, id: &str) -> Result<Thumbnail> {
        self.store
            .get_thumbnail(user_id, id)
            .await
            .map_err(FileError::storage)?
            .ok_or(FileError::NotFound("file"))?
            .ok_or(FileError::NotFound("thumbnail (only images have one)"))
    }

    /// Removes the record; reclaims the bytes when no record points at them. True when
    /// bytes were reclaimed.
    async fn remove(&self, user_id: &str, id: &str) -> Result<Option<bool>> {
        let Some(sha) = self
            .store
            .delete_file(user_id, id)
            .await
            .map_err(FileError::storage)?
        else {
            return Ok(None);
        };
        let _guard = self.blob_lock(&sha).lock().await;
        if self
            .store
            .blob_refs(&sha)
            .await
            .map_err(FileError::storage)?
            == 0
        {
            self.store
                .delete_blob(&sha)
                .await
                .map_err(FileError::storage)?;
            return Ok(Some(true));
        }
        Ok(Some(false))
    }

    pub async fn delete_file(&self, user_id: &str, id: &str) -> Result<()> {
        self.remove(user_id, id)
            .await?
            .ok_or(FileError::NotFound("file"))
            .map(|_| ())
    }

    /// Drops the caller's records for these ids (unknown ids are ignored); returns how
    /// many blobs were reclaimed.
    pub async fn release_files(&self, user_id: &str, ids: &[String]) -> Result<u32> {
        let mut reclaimed = 0;
        for id in ids {
            if self.remove(user_id, id).await? == Some(true) {
                reclaimed += 1;
            }
        }
        Ok(reclaimed)
    }

    pub async fn prompt_parts(
        &self,
        user_id: &str,
        ids: &[String],
        include_images: bool,
        max_image_side: u32,
    ) -> Result<Vec<FilePromptParts>> {
        if ids.len() > MAX_PROMPT_FILES {
            return Err(FileError::invalid(format!(
                "at most {MAX_PROMPT_FILES} files can be attached to one message"
            )));
        }
        let max_side = match max_image_side {
            0 => 2048,
            n => n.clamp(64, 4096),
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let info = self.get_file(user_id, id).await?;
            let extraction = self.get_extraction(user_id, id).await?;
            let text_parts = extraction
                .parts
                .into_iter()
                .map(|p| TextPromptPart {
                    label: p.label,
                    text: p.text,
                    token_count: p.token_count,
                })
                .collect();
            let mut image = None;
            if include_images && info.image.is_some() {
                let (_, data) = self.download(user_id, id).await?;
                let filename = info.filename.clone();
                image = Some(
                    self.bounded("image", move |limits| {
                        match detect::detect(&data, &filename)? {
                            Detected::Image(f) => Ok(convert::prompt_image(
                                extract::image::prompt_image(&data, f, max_side, limits)?,
                            )),
                            _ => Err(FileError::Internal(anyhow::anyhow!(
                                "stored image is not an image"
                            ))),
                        }
                    })
                    .await?,
                );
            }
            out.push(FilePromptParts {
                file: Some(info),
                text_parts,
                image,
            });
        }
        Ok(out)
    }
}
