//! One contract for both storage backends: local (directory + SQLite) and MongoDB
//! (GridFS + `files` collection, against the MongoDB-wire test server).

use std::sync::Arc;

use bytes::Bytes;
use confab_common::testing::{MongoServer, unique_name};
use confab_extract::corpus;
use confab_files::store::mongo::MongoStore;
use confab_files::store::{FileRecord, Store};
use confab_proto::files::v1::*;

use crate::*;

async fn mongo_store() -> Arc<dyn Store> {
    let server = MongoServer::shared().await;
    let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
    Arc::new(
        MongoStore::from_database(client.database(&unique_name("files")))
            .await
            .unwrap(),
    )
}

fn record(user: &str, id: &str, sha: &str, thumb: bool) -> FileRecord {
    FileRecord {
        user_id: user.into(),
        info: FileInfo {
            id: id.into(),
            filename: format!("{id}.txt"),
            sha256: sha.into(),
            size_bytes: 3,
            ..Default::default()
        },
        extraction: Extraction {
            file_id: id.into(),
            parts: vec![ExtractedPart {
                label: "Text".into(),
                text: format!("text of {id}"),
                ..Default::default()
            }],
            ..Default::default()
        },
        thumbnail: thumb.then(|| Thumbnail {
            mime_type: "image/png".into(),
            data: vec![1, 2, 3],
            width: 1,
            height: 1,
        }),
    }
}

async fn contract(store: Arc<dyn Store>) {
    let sha = "ab".repeat(32);
    let other_sha = "cd".repeat(32);
    // Blobs: idempotent put, get, delete of missing.
    assert!(!store.has_blob(&sha).await.unwrap());
    assert!(store.get_blob(&sha).await.unwrap().is_none());
    let big = Bytes::from(corpus::words(3, 300_000).into_bytes());
    store.put_blob(&sha, big.clone()).await.unwrap();
    store.put_blob(&sha, big.clone()).await.unwrap();
    assert!(store.has_blob(&sha).await.unwrap());
    assert_eq!(store.get_blob(&sha).await.unwrap().unwrap(), big);
    store.delete_blob(&other_sha).await.unwrap();

    // Records: ids are UUIDv7, ordered by time.
    let ids: Vec<String> = (0..5).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (i, id) in ids.iter().enumerate() {
        let s = if i == 0 { &other_sha } else { &sha };
        store
            .insert_file(&record("alice", id, s, i == 1))
            .await
            .unwrap();
    }
    let bob_id = uuid::Uuid::now_v7().to_string();
    store
        .insert_file(&record("bob", &bob_id, &sha, false))
        .await
        .unwrap();

    assert_eq!(
        store.get_info("alice", &ids[2]).await.unwrap().unwrap().id,
        ids[2]
    );
    assert!(
        store.get_info("bob", &ids[2]).await.unwrap().is_none(),
        "isolation"
    );
    assert!(
        store.get_info("alice", &bob_id).await.unwrap().is_none(),
        "isolation"
    );
    let ex = store
        .get_extraction("alice", &ids[3])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ex.parts[0].text, format!("text of {}", ids[3]));
    assert!(
        store
            .get_extraction("bob", &ids[3])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .get_thumbnail("alice", &ids[1])
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .data,
        [1, 2, 3]
    );
    assert_eq!(
        store.get_thumbnail("alice", &ids[2]).await.unwrap(),
        Some(None)
    );
    assert_eq!(store.get_thumbnail("bob", &ids[1]).await.unwrap(), None);
    assert_eq!(
        store.find_by_sha("alice", &sha).await.unwrap().unwrap().id,
        ids[1],
        "oldest match"
    );
    assert_eq!(store.find_by_sha("bob", &other_sha).await.unwrap(), None);

    let page1 = store.list("alice", None, 3).await.unwrap();
    let got: Vec<_> = page1.iter().map(|f| f.id.clone()).collect();
    assert_eq!(got, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    let page2 = store.list("alice", Some(&ids[2]), 3).await.unwrap();
    let got: Vec<_> = page2.iter().map(|f| f.id.clone()).collect();
    assert_eq!(got, [ids[1].clone(), ids[0].clone()]);

    assert_eq!(store.blob_refs(&sha).await.unwrap(), 5);
    assert_eq!(
        store.delete_file("bob", &ids[1]).await.unwrap(),
        None,
        "isolation"
    );
    assert_eq!(
        store.delete_file("alice", &ids[1]).await.unwrap(),
        Some(sha.clone())
    );
    assert_eq!(store.delete_file("alice", &ids[1]).await.unwrap(), None);
    assert_eq!(store.blob_refs(&sha).await.unwrap(), 4);
    store.delete_blob(&sha).await.unwrap();
    assert!(!store.has_blob(&sha).await.unwrap());
}

#[tokio::test]
async fn local_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(local_store(dir.path())).await;
}

#[tokio::test]
async fn gridfs_store_contract() {
    contract(mongo_store().await).await;
}

/// The whole service on GridFS: upload, dedup, extraction, download, reclaim.
#[tokio::test]
async fn service_on_gridfs() {
    let store = mongo_store().await;
    let mut app = spawn_app_on(tempfile::tempdir().unwrap(), store, |_| {}).await;
    let pdf = corpus::pdf(&[
        vec!["GridFS page one".into()],
        vec!["GridFS page two".into()],
    ]);
    let info = upload_ok(&mut app.client, "alice", "g.pdf", &pdf).await;
    let again = upload(&mut app.client, "alice", "g2.pdf", &pdf)
        .await
        .unwrap();
    assert!(again.deduplicated);
    let ex = extraction(&mut app.client, "alice", &info.id).await;
    assert!(ex.parts[1].text.contains("GridFS page two"));
    let (_, data) = download(&mut app.client, "alice", &info.id).await.unwrap();
    assert_eq!(data, pdf);
    let img = corpus::image(image::ImageFormat::Png, 300, 300);
    let i = upload_ok(&mut app.client, "alice", "i.png", &img).await;
    assert!(i.has_thumbnail);
    app.client
        .delete_file(req(
            "alice",
            DeleteFileRequest {
                file_id: info.id.clone(),
            },
        ))
        .await
        .unwrap();
    assert!(!app.store.has_blob(&info.sha256).await.unwrap());
    assert!(app.store.has_blob(&i.sha256).await.unwrap());
}
