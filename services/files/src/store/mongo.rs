//! Distributed storage: blobs in GridFS (id = sha256), records in the `files` collection,
//! uploads in progress in `uploads` with their bytes in `upload_chunks` (one document per
//! chunk, `_id` = upload id + start offset, so two replicas cannot both append at one offset).

use anyhow::Context;
use bytes::Bytes;
use confab_proto::files::v1::{Extraction, FileInfo, FinishUploadResponse, Thumbnail};
use futures::{AsyncReadExt, AsyncWriteExt, TryStreamExt};
use mongodb::bson::{Binary, Bson, Document, doc, spec::BinarySubtype};
use mongodb::gridfs::GridFsBucket;
use mongodb::{Collection, IndexModel};
use prost::Message;

use super::{FileRecord, Store, StoreResult, UploadRecord, UploadState};

pub struct MongoStore {
    files: Collection<Document>,
    uploads: Collection<Document>,
    chunks: Collection<Document>,
    bucket: GridFsBucket,
}

impl MongoStore {
    pub async fn connect(uri: &str, db_name: &str) -> anyhow::Result<Self> {
        let client = mongodb::Client::with_uri_str(uri)
            .await
            .context("parsing MONGODB_URI")?;
        Self::from_database(client.database(db_name)).await
    }

    pub async fn from_database(db: mongodb::Database) -> anyhow::Result<Self> {
        let files = db.collection::<Document>("files");
        for keys in [doc! {"user_id": 1, "sha256": 1}, doc! {"sha256": 1}] {
            files
                .create_index(IndexModel::builder().keys(keys).build())
                .await
                .context("creating indexes on files")?;
        }
        let uploads = db.collection::<Document>("uploads");
        for keys in [doc! {"user_id": 1}, doc! {"expires_at_ms": 1}] {
            uploads
                .create_index(IndexModel::builder().keys(keys).build())
                .await
                .context("creating indexes on uploads")?;
        }
        let chunks = db.collection::<Document>("upload_chunks");
        for keys in [
            doc! {"upload_id": 1, "start": 1, "end": 1},
            doc! {"expires_at_ms": 1},
        ] {
            chunks
                .create_index(IndexModel::builder().keys(keys).build())
                .await
                .context("creating indexes on upload_chunks")?;
        }
        Ok(Self {
            files,
            uploads,
            chunks,
            bucket: db.gridfs_bucket(None),
        })
    }
}

fn bin(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

fn field<M: Message + Default>(d: &Document, key: &str) -> anyhow::Result<M> {
    let bytes = d.get_binary_generic(key).context("malformed file record")?;
    M::decode(bytes.as_slice()).context("malformed file record")
}

fn is_not_found(e: &mongodb::error::Error) -> bool {
    matches!(
        *e.kind,
        mongodb::error::ErrorKind::GridFs(mongodb::error::GridFsErrorKind::FileNotFound { .. })
    )
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
}

const STATE_OPEN: i32 = 0;
const STATE_FINISHING: i32 = 1;
const STATE_DONE: i32 = 2;

fn mongo_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn int(d: &Document, key: &str) -> anyhow::Result<i64> {
    match d.get(key) {
        Some(Bson::Int64(n)) => Ok(*n),
        Some(Bson::Int32(n)) => Ok(i64::from(*n)),
        Some(Bson::Double(n)) => Ok(*n as i64),
        _ => anyhow::bail!("malformed upload record: {key}"),
    }
}

fn upload_doc(d: &Document) -> anyhow::Result<UploadRecord> {
    let state = match int(d, "state")? as i32 {
        STATE_OPEN => UploadState::Open,
        STATE_FINISHING => UploadState::Finishing,
        _ => UploadState::Done(match d.get_str("error") {
            Ok(e) => Err(e.to_owned()),
            Err(_) => Ok(field(d, "outcome")?),
        }),
    };
    Ok(UploadRecord {
        id: d
            .get_str("_id")
            .context("malformed upload record")?
            .to_owned(),
        user_id: d
            .get_str("user_id")
            .context("malformed upload record")?
            .to_owned(),
        filename: d
            .get_str("filename")
            .context("malformed upload record")?
            .to_owned(),
        declared: int(d, "declared")?.max(0) as u64,
        expires_at_ms: int(d, "expires_at_ms")?,
        state,
    })
}

#[async_trait::async_trait]
impl Store for MongoStore {
    async fn has_blob(&self, sha256: &str) -> StoreResult<bool> {
        let mut cursor = self.bucket.find(doc! {"_id": sha256}).await?;
        Ok(cursor.try_next().await?.is_some())
    }

    async fn put_blob(&self, sha256: &str, data: Bytes) -> StoreResult<()> {
        if self.has_blob(sha256).await? {
            return Ok(());
        }
        let mut up = self
            .bucket
            .open_upload_stream(sha256)
            .id(Bson::String(sha256.to_owned()))
            .await?;
        up.write_all(&data).await?;
        up.close().await?;
        Ok(())
    }

    async fn get_blob(&self, sha256: &str) -> StoreResult<Option<Bytes>> {
        let mut stream = match self
            .bucket
            .open_download_stream(Bson::String(sha256.to_owned()))
            .await
        {
            Ok(s) => s,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok(Some(buf.into()))
    }

    async fn delete_blob(&self, sha256: &str) -> StoreResult<()> {
        match self.bucket.delete(Bson::String(sha256.to_owned())).await {
            Err(e) if !is_not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn insert_file(&self, r: &FileRecord) -> StoreResult<()> {
        let mut d = doc! {
            "_id": &r.info.id,
            "user_id": &r.user_id,
            "sha256": &r.info.sha256,
            "info": bin(r.info.encode_to_vec()),
            "extraction": bin(r.extraction.encode_to_vec()),
        };
        if let Some(t) = &r.thumbnail {
            d.insert("thumbnail", bin(t.encode_to_vec()));
        }
        self.files.insert_one(d).await?;
        Ok(())
    }

    async fn find_by_sha(&self, user_id: &str, sha256: &str) -> StoreResult<Option<FileInfo>> {
        let d = self
            .files
            .find_one(doc! {"user_id": user_id, "sha256": sha256})
            .projection(doc! {"info": 1})
            .sort(doc! {"_id": 1})
            .await?;
        d.map(|d| field(&d, "info")).transpose()
    }

    async fn get_info(&self, user_id: &str, id: &str) -> StoreResult<Option<FileInfo>> {
        let d = self
            .files
            .find_one(doc! {"_id": id, "user_id": user_id})
            .projection(doc! {"info": 1})
            .await?;
        d.map(|d| field(&d, "info")).transpose()
    }

    async fn get_extraction(&self, user_id: &str, id: &str) -> StoreResult<Option<Extraction>> {
        let d = self
            .files
            .find_one(doc! {"_id": id, "user_id": user_id})
            .projection(doc! {"extraction": 1})
            .await?;
        d.map(|d| field(&d, "extraction")).transpose()
    }

    async fn get_thumbnail(
        &self,
        user_id: &str,
        id: &str,
    ) -> StoreResult<Option<Option<Thumbnail>>> {
        let d = self
            .files
            .find_one(doc! {"_id": id, "user_id": user_id})
            .projection(doc! {"thumbnail": 1})
            .await?;
        match d {
            None => Ok(None),
            Some(d) if d.contains_key("thumbnail") => Ok(Some(Some(field(&d, "thumbnail")?))),
            Some(_) => Ok(Some(None)),
        }
    }

    async fn list(
        &self,
        user_id: &str,
        before_id: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<FileInfo>> {
        let mut filter = doc! {"user_id": user_id};
        if let Some(b) = before_id {
            filter.insert("_id", doc! {"$lt": b});
        }
        let docs: Vec<Document> = self
            .files
            .find(filter)
            .projection(doc! {"info": 1})
            .sort(doc! {"_id": -1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        docs.iter().map(|d| field(d, "info")).collect()
    }

    async fn delete_file(&self, user_id: &str, id: &str) -> StoreResult<Option<String>> {
        let d = self
            .files
            .find_one_and_delete(doc! {"_id": id, "user_id": user_id})
            .await?;
        Ok(d.and_then(|d| d.get_str("sha256").ok().map(str::to_owned)))
    }

    async fn blob_refs(&self, sha256: &str) -> StoreResult<u64> {
        Ok(self.files.count_documents(doc! {"sha256": sha256}).await?)
    }

    async fn create_upload(&self, u: &UploadRecord) -> StoreResult<()> {
        self.uploads
            .insert_one(doc! {
                "_id": &u.id,
                "user_id": &u.user_id,
                "filename": &u.filename,
                "declared": mongo_u64(u.declared),
                "expires_at_ms": u.expires_at_ms,
                "state": STATE_OPEN,
                "claim_until_ms": 0i64,
            })
            .await?;
        Ok(())
    }

    async fn get_upload(&self, id: &str) -> StoreResult<Option<UploadRecord>> {
        let d = self.uploads.find_one(doc! {"_id": id}).await?;
        d.as_ref().map(upload_doc).transpose()
    }

    async fn count_uploads(&self, user_id: &str, now_ms: i64) -> StoreResult<(u64, u64)> {
        let live = doc! {"state": {"$lt": STATE_DONE}, "expires_at_ms": {"$gt": now_ms}};
        let mut mine = live.clone();
        mine.insert("user_id", user_id);
        Ok((
            self.uploads.count_documents(mine).await?,
            self.uploads.count_documents(live).await?,
        ))
    }

    async fn received(&self, upload_id: &str) -> StoreResult<u64> {
        let last = self
            .chunks
            .find_one(doc! {"upload_id": upload_id})
            .sort(doc! {"start": -1})
            .projection(doc! {"end": 1})
            .await?;
        Ok(match last {
            Some(d) => int(&d, "end")?.max(0) as u64,
            None => 0,
        })
    }

    async fn put_chunk(&self, upload_id: &str, start: u64, data: Bytes) -> StoreResult<bool> {
        let Some(upload) = self
            .uploads
            .find_one(doc! {"_id": upload_id, "state": STATE_OPEN})
            .projection(doc! {"expires_at_ms": 1})
            .await?
        else {
            return Ok(false);
        };
        let end = start + data.len() as u64;
        let chunk = doc! {
            "_id": format!("{upload_id}/{start:016x}"),
            "upload_id": upload_id,
            "start": mongo_u64(start),
            "end": mongo_u64(end),
            "expires_at_ms": int(&upload, "expires_at_ms")?,
            "data": bin(data.to_vec()),
        };
        match self.chunks.insert_one(chunk).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_chunks(&self, upload_id: &str, from: u64, to: u64) -> StoreResult<Bytes> {
        let mut cursor = self
            .chunks
            .find(doc! {
                "upload_id": upload_id,
                "start": {"$lt": mongo_u64(to)},
                "end": {"$gt": mongo_u64(from)},
            })
            .sort(doc! {"start": 1})
            .await?;
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        while let Some(d) = cursor.try_next().await? {
            let (start, end) = (int(&d, "start")? as u64, int(&d, "end")? as u64);
            let bytes = d.get_binary_generic("data").context("malformed chunk")?;
            anyhow::ensure!(
                bytes.len() as u64 == end - start,
                "a chunk of upload {upload_id} is damaged"
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
        let r = self
            .uploads
            .update_one(
                doc! {
                    "_id": id,
                    "user_id": user_id,
                    "expires_at_ms": {"$gt": now_ms},
                    "$or": [
                        {"state": STATE_OPEN},
                        {"state": STATE_FINISHING, "claim_until_ms": {"$lt": now_ms}},
                    ],
                },
                doc! {"$set": {"state": STATE_FINISHING, "claim_until_ms": until_ms}},
            )
            .await?;
        Ok(r.modified_count == 1)
    }

    async fn release_upload(&self, id: &str) -> StoreResult<()> {
        self.uploads
            .update_one(
                doc! {"_id": id, "state": STATE_FINISHING},
                doc! {"$set": {"state": STATE_OPEN}},
            )
            .await?;
        Ok(())
    }

    async fn complete_upload(
        &self,
        id: &str,
        outcome: &Result<FinishUploadResponse, String>,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        let mut set = doc! {"state": STATE_DONE, "expires_at_ms": expires_at_ms};
        match outcome {
            Ok(r) => set.insert("outcome", bin(r.encode_to_vec())),
            Err(e) => set.insert("error", e.as_str()),
        };
        self.uploads
            .update_one(doc! {"_id": id}, doc! {"$set": set})
            .await?;
        self.chunks.delete_many(doc! {"upload_id": id}).await?;
        Ok(())
    }

    async fn delete_upload(&self, id: &str, user_id: &str) -> StoreResult<()> {
        let r = self
            .uploads
            .delete_one(doc! {"_id": id, "user_id": user_id})
            .await?;
        if r.deleted_count > 0 {
            self.chunks.delete_many(doc! {"upload_id": id}).await?;
        }
        Ok(())
    }

    async fn delete_expired_uploads(&self, now_ms: i64) -> StoreResult<u64> {
        let expired = doc! {"expires_at_ms": {"$lt": now_ms}};
        let gone = self
            .uploads
            .delete_many(expired.clone())
            .await?
            .deleted_count;
        self.chunks.delete_many(expired).await?;
        Ok(gone)
    }
}
