//! Embedded storage: blobs in `<dir>/files/<aa>/<sha256>`, records in SQLite (WAL).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use confab_proto::files::v1::{Extraction, FileInfo, Thumbnail};
use parking_lot::Mutex;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use super::{FileRecord, Store, StoreResult};

pub struct LocalStore {
    blobs: PathBuf,
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
             CREATE INDEX IF NOT EXISTS files_sha ON files(sha256);",
        )
        .context("creating the files schema")?;
        Ok(Self {
            blobs: blobs.to_owned(),
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
}
