//! Distributed storage: blobs in GridFS (id = sha256), records in the `files` collection.

use anyhow::Context;
use bytes::Bytes;
use confab_proto::files::v1::{Extraction, FileInfo, Thumbnail};
use futures::{AsyncReadExt, AsyncWriteExt, TryStreamExt};
use mongodb::bson::{Binary, Bson, Document, doc, spec::BinarySubtype};
use mongodb::gridfs::GridFsBucket;
use mongodb::{Collection, IndexModel};
use prost::Message;

use super::{FileRecord, Store, StoreResult};

pub struct MongoStore {
    files: Collection<Document>,
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
        Ok(Self {
            files,
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
}
