//! Embedded storage: blobs in `<dir>/files/<aa>/<sha256>`, records in SQLite (WAL).
//! Uploads in progress: a row each in `uploads`, their chunks as files under
//! `<dir>/files/uploads/<upload id>/` indexed by `upload_chunks`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use confab_proto::files::v1::{Extraction, FileInfo, FinishUploadResponse, Thumbnail};
use parking_lot::Mutex;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use super::{FileRecord, Store, StoreResult, UploadRecord, UploadState};

pub struct LocalStore {
    blobs: PathBuf,
    uploads: PathBuf,
    db: Arc<Mutex<Connection>>,
}

impl LocalStore {
    /// `blobs`: the blob directory; `db`: the SQLite file.
    pub fn open(blobs: &Path, db: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(blobs).with_context(|| format!("creating {}", blobs.display()))?;
        let conn = Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS files (
                 id TEXT PRIMARY KEY,
                 user_id TEXT NOT NULL,
                 sha256 TEXT NOT NULL,
                 info BLOB NOT NULL,
                 extraction BLOB NOT NULL,
                 thumbnail BLOB
             );
             CREATE INDEX IF NOT EXISTS files_user_id ON files(user_id, id);
             CREATE INDEX IF NOT EXISTS files_user_sha ON files(user_id, sha256);
             CREATE INDEX IF NOT EXISTS files_sha ON files(sha256);
             CREATE TABLE IF NOT EXISTS uploads (
                 id TEXT PRIMARY KEY,
                 user_id TEXT NOT NULL,
                 filename TEXT NOT NULL,
                 declared INTEGER NOT NULL,
                 expires_at_ms INTEGER NOT NULL,
                 state INTEGER NOT NULL DEFAULT 0,
                 claim_until_ms INTEGER NOT NULL DEFAULT 0,
                 outcome BLOB,
                 error TEXT
             );
             CREATE INDEX IF NOT EXISTS uploads_user ON uploads(user_id, expires_at_ms);
             CREATE INDEX IF NOT EXISTS uploads_expires ON uploads(expires_at_ms);
             CREATE TABLE IF NOT EXISTS upload_chunks (
                 upload_id TEXT NOT NULL,
                 start INTEGER NOT NULL,
                 end INTEGER NOT NULL,
                 file TEXT NOT NULL,
                 expires_at_ms INTEGER NOT NULL,
                 PRIMARY KEY (upload_id, start)
             );
             CREATE INDEX IF NOT EXISTS upload_chunks_expires ON upload_chunks(expires_at_ms);",
        )
        .context("creating the files schema")?;
        Ok(Self {
            blobs: blobs.to_owned(),
            uploads: blobs.join("uploads"),
            db: Arc::new(Mutex::new(conn)),
        })
    }

    fn blob_path(&self, sha256: &str) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "not a sha256: {sha256:?}"
        );
        Ok(self.blobs.join(&sha256[..2]).join(sha256))
    }

    /// Upload ids come from clients: only the shape the service issues may name a directory.
    fn upload_dir(&self, id: &str) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "not an upload id: {id:?}"
        );
        Ok(self.uploads.join(id))
    }

    async fn remove_upload_dirs(&self, ids: Vec<String>) -> StoreResult<()> {
        for id in ids {
            match tokio::fs::remove_dir_all(self.upload_dir(&id)?).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db.lock()))
            .await
            .context("database task failed")?
            .context("database query failed")
    }
}

fn decode<M: Message + Default>(bytes: Vec<u8>) -> rusqlite::Result<M> {
    M::decode(bytes.as_slice()).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

const STATE_OPEN: i64 = 0;
const STATE_FINISHING: i64 = 1;
const STATE_DONE: i64 = 2;

fn upload_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRecord> {
    let state = match r.get::<_, i64>(5)? {
        STATE_OPEN => UploadState::Open,
        STATE_FINISHING => UploadState::Finishing,
        _ => UploadState::Done(match r.get::<_, Option<String>>(7)? {
            Some(error) => Err(error),
            None => Ok(decode(r.get::<_, Option<Vec<u8>>>(6)?.unwrap_or_default())?),
        }),
    };
    Ok(UploadRecord {
        id: r.get(0)?,
        user_id: r.get(1)?,
        filename: r.get(2)?,
        declared: r.get::<_, i64>(3)?.max(0) as u64,
        expires_at_ms: r.get(4)?,
        state,
    })
}

fn sql_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Store for LocalStore {
    async fn has_blob(&self, sha256: &str) -> StoreResult<bool> {
        Ok(tokio::fs::try_exists(self.blob_path(sha256)?).await?)
    }

    async fn put_blob(&self, sha256: &str, data: Bytes) -> StoreResult<()> {
        let path = self.blob_path(sha256)?;
        if tokio::fs::try_exists(&path).await? {
            return Ok(());
        }
        let dir = path.parent().expect("blob paths have a parent");
        tokio::fs::create_dir_all(dir).await?;
        let tmp = dir.join(format!(".{sha256}.{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, &data).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(())
    }

    async fn get_blob(&self, sha256: &str) -> StoreResult<Option<Bytes>> {
        match tokio::fs::read(self.blob_path(sha256)?).await {
            Ok(v) => Ok(Some(v.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_blob(&self, sha256: &str) -> StoreResult<()> {
        match tokio::fs::remove_file(self.blob_path(sha256)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn insert_file(&self, r: &FileRecord) -> StoreResult<()> {
        let (id, user, sha) = (r.info.id.clone(), r.user_id.clone(), r.info.sha256.clone());
        let info = r.info.encode_to_vec();
        let extraction = r.extraction.encode_to_vec();
        let thumb = r.thumbnail.as_ref().map(Message::encode_to_vec);
        self.db(move |c| {
            c.execute(
                "INSERT INTO files (id, user_id, sha256, info, extraction, thumbnail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, user, sha, info, extraction, thumb],
            )
            .map(|_| ())
        })
        .await
    }

    async fn find_by_sha(&self, user_id: &str, sha256: &str) -> StoreResult<Option<FileInfo>> {
        let (user, sha) = (user_id.to_owned(), sha256.to_owned());
        self.db(move |c| {
            c.query_row(
                "SELECT info FROM files WHERE user_id = ?1 AND sha256 = ?2 ORDER BY id LIMIT 1",
                params![user, sha],
                |r| decode(r.get(0)?),
            )
            .optional()
        })
        .await
    }

    async fn get_info(&self, user_id: &str, id: &str) -> StoreResult<Option<FileInfo>> {
        let (user, id) = (user_id.to_owned(), id.to_owned());
        self.db(move |c| {
            c.query_row(
                "SELECT info FROM files WHERE user_id = ?1 AND id = ?2",
                params![user, id],
                |r| decode(r.get(0)?),
            )
            .optional()
        })
        .await
    }

    async fn get_extraction(&self, user_id: &str, id: &str) -> StoreResult<Option<Extraction>> {
        let (user, id) = (user_id.to_owned(), id.to_owned());
        self.db(move |c| {
            c.query_row(
                "SELECT extraction FROM files WHERE user_id = ?1 AND id = ?2",
                params![user, id],
                |r| decode(r.get(0)?),
            )
            .optional()
        })
        .await
    }

    async fn get_thumbnail(
        &self,
        user_id: &str,
        id: &str,
    ) -> StoreResult<Option<Option<Thumbnail>>> {
        let (user, id) = (user_id.to_owned(), id.to_owned());
        self.db(move |c| {
            c.query_row(
                "SELECT thumbnail FROM files WHERE user_id = ?1 AND id = ?2",
                params![user, id],
                |r| {
                    let b: Option<Vec<u8>> = r.get(0)?;
                    b.map(decode).transpose()
                },
            )
            .optional()
        })
        .await
    }

    async fn list(
        &self,
        user_id: &str,
        before_id: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<FileInfo>> {
        let user = user_id.to_owned();
        // Ids are UUIDv7 (time-ordered) and compare as text; "g" sorts above every hex id.
        let before = before_id.unwrap_or("g").to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT info FROM files WHERE user_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![user, before, limit], |r| decode(r.get(0)?))?;
            rows.collect()
        })
        .await
    }

    async fn delete_file(&self, user_id: &str, id: &str) -> StoreResult<Option<String>> {
        let (user, id) = (user_id.to_owned(), id.to_owned());
        self.db(move |c| {
            c.query_row(
                "DELETE FROM files WHERE user_id = ?1 AND id = ?2 RETURNING sha256",
                params![user, id],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn blob_refs(&self, sha256: &str) -> StoreResult<u64> {
        let sha = sha256.to_owned();
        self.db(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM files WHERE sha256 = ?1",
                params![sha],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n.max(0) as u64)
    }

    async fn create_upload(&self, u: &UploadRecord) -> StoreResult<()> {
        self.upload_dir(&u.id)?;
        let (id, user, name) = (u.id.clone(), u.user_id.clone(), u.filename.clone());
        let (declared, expires) = (sql_u64(u.declared), u.expires_at_ms);
        self.db(move |c| {
            c.execute(
                "INSERT INTO uploads (id, user_id, filename, declared, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, user, name, declared, expires],
            )
            .map(|_| ())
        })
        .await
    }

    async fn get_upload(&self, id: &str) -> StoreResult<Option<UploadRecord>> {
        let id = id.to_owned();
        self.db(move |c| {
            c.query_row(
                "SELECT id, user_id, filename, declared, expires_at_ms, state, outcome, error FROM uploads WHERE id = ?1",
                params![id],
                upload_row,
            )
            .optional()
        })
        .await
    }

    async fn count_uploads(&self, user_id: &str, now_ms: i64) -> StoreResult<(u64, u64)> {
        let user = user_id.to_owned();
        self.db(move |c| {
            c.query_row(
                "SELECT COUNT(*) FILTER (WHERE user_id = ?1), COUNT(*) FROM uploads
                 WHERE state < ?2 AND expires_at_ms > ?3",
                params![user, STATE_DONE, now_ms],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
        })
        .await
    }

    async fn received(&self, upload_id: &str) -> StoreResult<u64> {
        let id = upload_id.to_owned();
        self.db(move |c| {
            c.query_row(
                "SELECT COALESCE(MAX(end), 0) FROM upload_chunks WHERE upload_id = ?1",
                params![id],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n.max(0) as u64)
    }

    async fn put_chunk(&self, upload_id: &str, start: u64, data: Bytes) -> StoreResult<bool> {
        let dir = self.upload_dir(upload_id)?;
        tokio::fs::create_dir_all(&dir).await?;
        let name = format!("{start:016x}-{}", uuid::Uuid::new_v4().simple());
        let path = dir.join(&name);
        tokio::fs::write(&path, &data).await?;
        let (id, end) = (upload_id.to_owned(), start + data.len() as u64);
        // One statement: the chunk goes in only while the upload is open and nothing starts there.
        let inserted = self
            .db(move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO upload_chunks (upload_id, start, end, file, expires_at_ms)
                     SELECT id, ?2, ?3, ?4, expires_at_ms FROM uploads WHERE id = ?1 AND state = ?5",
                    params![id, sql_u64(start), sql_u64(end), name, STATE_OPEN],
                )
            })
            .await?
            == 1;
        if !inserted {
            tokio::fs::remove_file(&path).await?;
        }
        Ok(inserted)
    }

    async fn read_chunks(&self, upload_id: &str, from: u64, to: u64) -> StoreResult<Bytes> {
        let dir = self.upload_dir(upload_id)?;
        let id = upload_id.to_owned();
        let chunks: Vec<(u64, u64, String)> = self
            .db(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT start, end, file FROM upload_chunks
                     WHERE upload_id = ?1 AND start < ?2 AND end > ?3 ORDER BY start",
                )?;
                let rows = stmt.query_map(params![id, sql_u64(to), sql_u64(from)], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get(2)?,
                    ))
                })?;
                rows.collect()
            })
            .await?;
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        for (start, end, file) in chunks {
            let bytes = tokio::fs::read(dir.join(&file)).await?;
            anyhow::ensure!(
                bytes.len() as u64 == end - start,
                "chunk {file} of upload {upload_id} is damaged"
            );
            let lo = from.saturating_sub(start) as usize;
            let hi = (to.min(end) - start) as usize;
            out.extend_from_slice(&bytes[lo..hi]);
        }
        anyhow::ensure!(
            out.len() as u64 == to.saturating_sub(from),
            "upload {upload_id} is missing bytes in {from}..{to}"
        );
        Ok(out.into())
    }

    async fn claim_upload(
        &self,
        id: &str,
        user_id: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool> {
        let (id, user) = (id.to_owned(), user_id.to_owned());
        self.db(move |c| {
            c.execute(
                "UPDATE uploads SET state = ?1, claim_until_ms = ?2
                 WHERE id = ?3 AND user_id = ?4 AND expires_at_ms > ?5
                   AND (state = ?6 OR (state = ?1 AND claim_until_ms < ?5))",
                params![STATE_FINISHING, until_ms, id, user, now_ms, STATE_OPEN],
            )
        })
        .await
        .map(|n| n == 1)
    }

    async fn release_upload(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.db(move |c| {
            c.execute(
                "UPDATE uploads SET state = ?1 WHERE id = ?2 AND state = ?3",
                params![STATE_OPEN, id, STATE_FINISHING],
            )
            .map(|_| ())
        })
        .await
    }

    async fn complete_upload(
        &self,
        id: &str,
        outcome: &Result<FinishUploadResponse, String>,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        let (ok, error) = match outcome {
            Ok(r) => (Some(r.encode_to_vec()), None),
            Err(e) => (None, Some(e.clone())),
        };
        let key = id.to_owned();
        self.db(move |c| {
            c.execute(
                "UPDATE uploads SET state = ?1, outcome = ?2, error = ?3, expires_at_ms = ?4 WHERE id = ?5",
                params![STATE_DONE, ok, error, expires_at_ms, key],
            )?;
            c.execute("DELETE FROM upload_chunks WHERE upload_id = ?1", params![key])
                .map(|_| ())
        })
        .await?;
        self.remove_upload_dirs(vec![id.to_owned()]).await
    }

    async fn delete_upload(&self, id: &str, user_id: &str) -> StoreResult<()> {
        if self.upload_dir(id).is_err() {
            return Ok(());
        }
        let (key, user) = (id.to_owned(), user_id.to_owned());
        let deleted = self
            .db(move |c| {
                let n = c.execute(
                    "DELETE FROM uploads WHERE id = ?1 AND user_id = ?2",
                    params![key, user],
                )?;
                if n > 0 {
                    c.execute(
                        "DELETE FROM upload_chunks WHERE upload_id = ?1",
                        params![key],
                    )?;
                }
                Ok(n > 0)
            })
            .await?;
        if deleted {
            self.remove_upload_dirs(vec![id.to_owned()]).await?;
        }
        Ok(())
    }

    async fn delete_expired_uploads(&self, now_ms: i64) -> StoreResult<u64> {
        let (gone, dirs): (u64, Vec<String>) = self
            .db(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id FROM uploads WHERE expires_at_ms < ?1
                     UNION SELECT DISTINCT upload_id FROM upload_chunks WHERE expires_at_ms < ?1",
                )?;
                let ids = stmt
                    .query_map(params![now_ms], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                let gone = c.execute(
                    "DELETE FROM uploads WHERE expires_at_ms < ?1",
                    params![now_ms],
                )?;
                c.execute(
                    "DELETE FROM upload_chunks WHERE expires_at_ms < ?1",
                    params![now_ms],
                )?;
                Ok((gone as u64, ids))
            })
            .await?;
        self.remove_upload_dirs(dirs).await?;
        Ok(gone)
    }
}
