//! Chunked upload semantics, limits, dedup, isolation, listing, download and deletion.

use std::time::Duration;

use confab_files::Config;
use confab_proto::files::v1::*;
use sha2::Digest;
use tonic::Code;

use crate::*;

async fn start(
    c: &mut Client,
    user: &str,
    size: u64,
) -> Result<StartUploadResponse, tonic::Status> {
    c.start_upload(req(
        user,
        StartUploadRequest {
            filename: "a.txt".into(),
            declared_size: size,
            declared_content_type: "text/plain".into(),
        },
    ))
    .await
    .map(|r| r.into_inner())
}

async fn chunk(
    c: &mut Client,
    user: &str,
    id: &str,
    offset: u64,
    data: &[u8],
) -> Result<u64, tonic::Status> {
    c.upload_chunk(req(
        user,
        UploadChunkRequest {
            upload_id: id.into(),
            offset,
            data: data.to_vec(),
        },
    ))
    .await
    .map(|r| r.into_inner().received_bytes)
}

async fn finish(
    c: &mut Client,
    user: &str,
    id: &str,
    sha: &str,
) -> Result<FinishUploadResponse, tonic::Status> {
    c.finish_upload(req(
        user,
        FinishUploadRequest {
            upload_id: id.into(),
            sha256: sha.into(),
        },
    ))
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn chunks_are_idempotent_and_ordered() {
    let mut app = spawn_app().await;
    let c = &mut app.client;
    let data = b"hello chunked world, this is a text file".to_vec();
    let s = start(c, "alice", data.len() as u64).await.unwrap();
    assert_eq!(s.max_chunk_bytes, 1 << 20);
    assert_eq!(s.max_file_bytes, 10 << 20);
    assert_eq!(
        chunk(c, "alice", &s.upload_id, 0, &data[..10])
            .await
            .unwrap(),
        10
    );
    // The same chunk again (a retry) is accepted.
    assert_eq!(
        chunk(c, "alice", &s.upload_id, 0, &data[..10])
            .await
            .unwrap(),
        10
    );
    // Overlapping retry that extends.
    assert_eq!(
        chunk(c, "alice", &s.upload_id, 5, &data[5..20])
            .await
            .unwrap(),
        20
    );
    // Different bytes at a received offset.
    assert_code(
        chunk(c, "alice", &s.upload_id, 0, b"HELLO").await,
        Code::InvalidArgument,
        "differs",
    );
    // A gap.
    assert_code(
        chunk(c, "alice", &s.upload_id, 30, &data[30..]).await,
        Code::InvalidArgument,
        "send offset 20",
    );
    // Someone else's upload id.
    assert_code(
        chunk(c, "bob", &s.upload_id, 20, &data[20..]).await,
        Code::NotFound,
        "upload",
    );
    assert_eq!(
        chunk(c, "alice", &s.upload_id, 20, &data[20..])
            .await
            .unwrap(),
        data.len() as u64
    );
    let sha = hex::encode(sha2::Sha256::digest(&data));
    assert_code(
        finish(c, "alice", &s.upload_id, &"0".repeat(64)).await,
        Code::InvalidArgument,
        "sha256",
    );
    // The failed verification consumed the upload; start again and finish twice.
    let s = start(c, "alice", data.len() as u64).await.unwrap();
    chunk(c, "alice", &s.upload_id, 0, &data).await.unwrap();
    let first = finish(c, "alice", &s.upload_id, &sha).await.unwrap();
    let again = finish(c, "alice", &s.upload_id, &sha).await.unwrap();
    assert_eq!(first.file, again.file);
    assert_eq!(first.file.as_ref().unwrap().sha256, sha);
    // Abort is idempotent; finishing an aborted upload is NOT_FOUND.
    let s = start(c, "alice", 3).await.unwrap();
    for _ in 0..2 {
        c.abort_upload(req(
            "alice",
            AbortUploadRequest {
                upload_id: s.upload_id.clone(),
            },
        ))
        .await
        .unwrap();
    }
    assert_code(
        finish(c, "alice", &s.upload_id, "").await,
        Code::NotFound,
        "upload",
    );
    // Incomplete against the declared size.
    let s = start(c, "alice", 100).await.unwrap();
    chunk(c, "alice", &s.upload_id, 0, b"short").await.unwrap();
    assert_code(
        finish(c, "alice", &s.upload_id, "").await,
        Code::InvalidArgument,
        "100 were declared",
    );
}

#[tokio::test]
async fn size_limits_name_the_size_and_the_limit() {
    let mut app = spawn_app_with(|c: &mut Config| {
        c.max_file_bytes = 1 << 20;
        c.max_chunk_bytes = 512 * 1024;
    })
    .await;
    let c = &mut app.client;
    let e = assert_code(
        start(c, "alice", 3 << 20).await,
        Code::InvalidArgument,
        "3 MB",
    );
    assert!(e.message().contains("the limit is 1 MB"), "{}", e.message());
    // Undeclared size: refused while receiving.
    let s = start(c, "alice", 0).await.unwrap();
    let half = vec![b'a'; 512 * 1024];
    chunk(c, "alice", &s.upload_id, 0, &half).await.unwrap();
    chunk(c, "alice", &s.upload_id, 512 * 1024, &half)
        .await
        .unwrap();
    let e = assert_code(
        chunk(c, "alice", &s.upload_id, 1 << 20, b"one more").await,
        Code::InvalidArgument,
        "the limit is 1 MB",
    );
    assert!(
        e.message().contains("at least 1.0 MB") || e.message().contains("at least 1 MB"),
        "{}",
        e.message()
    );
    // The upload was dropped.
    assert_code(
        finish(c, "alice", &s.upload_id, "").await,
        Code::NotFound,
        "upload",
    );
    // Oversized chunks.
    let s = start(c, "alice", 0).await.unwrap();
    assert_code(
        chunk(c, "alice", &s.upload_id, 0, &vec![0u8; 600 * 1024]).await,
        Code::InvalidArgument,
        "chunks may be at most",
    );
    // Still fine for normal files.
    upload_ok(c, "alice", "ok.txt", b"ok").await;
}

#[tokio::test]
async fn upload_sessions_are_bounded_per_user() {
    let mut app = spawn_app_with(|c: &mut Config| c.max_uploads_per_user = 2).await;
    let c = &mut app.client;
    let a = start(c, "alice", 1).await.unwrap();
    start(c, "alice", 1).await.unwrap();
    assert_code(
        start(c, "alice", 1).await,
        Code::ResourceExhausted,
        "in progress",
    );
    start(c, "bob", 1).await.unwrap();
    c.abort_upload(req(
        "alice",
        AbortUploadRequest {
            upload_id: a.upload_id,
        },
    ))
    .await
    .unwrap();
    start(c, "alice", 1).await.unwrap();
}

#[tokio::test]
async fn unfinished_uploads_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(dir.path());
    config.upload_ttl = Duration::from_millis(100);
    config.max_uploads_per_user = 1;
    let files = confab_files::Files::new(config, local_store(dir.path()));
    let s = files.start_upload("alice", "a.txt", 2).unwrap();
    files.upload_chunk("alice", &s.upload_id, 0, b"h").unwrap();
    assert!(files.start_upload("alice", "b.txt", 2).is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(files.upload_chunk("alice", &s.upload_id, 1, b"i").is_err());
    files.start_upload("alice", "b.txt", 2).unwrap();
}

#[tokio::test]
async fn identical_bytes_are_stored_once_per_user() {
    let mut app = spawn_app().await;
    let data = b"same bytes twice";
    let first = upload(&mut app.client, "alice", "a.txt", data)
        .await
        .unwrap();
    let second = upload(&mut app.client, "alice", "b.txt", data)
        .await
        .unwrap();
    assert!(!first.deduplicated);
    assert!(second.deduplicated);
    assert_eq!(first.file, second.file);
    let bobs = upload(&mut app.client, "bob", "a.txt", data).await.unwrap();
    assert!(!bobs.deduplicated);
    assert_ne!(
        bobs.file.as_ref().unwrap().id,
        first.file.as_ref().unwrap().id
    );
}

#[tokio::test]
async fn other_users_files_are_not_found() {
    let mut app = spawn_app().await;
    let info = upload_ok(&mut app.client, "alice", "secret.txt", b"alice's secret").await;
    let c = &mut app.client;
    let id = info.id.clone();
    assert_code(
        c.get_file(req(
            "bob",
            GetFileRequest {
                file_id: id.clone(),
            },
        ))
        .await,
        Code::NotFound,
        "file",
    );
    assert_code(
        c.get_extraction(req(
            "bob",
            GetExtractionRequest {
                file_id: id.clone(),
            },
        ))
        .await,
        Code::NotFound,
        "file",
    );
    assert_code(download(c, "bob", &id).await, Code::NotFound, "file");
    assert_code(
        c.delete_file(req(
            "bob",
            DeleteFileRequest {
                file_id: id.clone(),
            },
        ))
        .await,
        Code::NotFound,
        "file",
    );
    let released = c
        .release_files(req(
            "bob",
            ReleaseFilesRequest {
                file_ids: vec![id.clone()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.reclaimed, 0);
    let list = c
        .list_files(req("bob", ListFilesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(list.files.is_empty());
    assert_eq!(
        c.get_file(req("alice", GetFileRequest { file_id: id }))
            .await
            .unwrap()
            .into_inner(),
        info
    );
    // No identity at all.
    assert_code(
        c.get_file(GetFileRequest { file_id: info.id }).await,
        Code::Unauthenticated,
        "identity",
    );
}

#[tokio::test]
async fn listing_pages_newest_first_and_download_streams_the_bytes() {
    let mut app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            upload_ok(
                &mut app.client,
                "alice",
                &format!("{i}.txt"),
                format!("file number {i}").as_bytes(),
            )
            .await
            .id,
        );
    }
    let c = &mut app.client;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_files(req(
                "alice",
                ListFilesRequest {
                    page_size: 2,
                    page_token: token,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.files.len() <= 2);
        seen.extend(page.files.into_iter().map(|f| f.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(seen, ids);
    assert_code(
        c.list_files(req(
            "alice",
            ListFilesRequest {
                page_size: 2,
                page_token: "garbage".into(),
            },
        ))
        .await,
        Code::InvalidArgument,
        "page token",
    );
    // A multi-chunk download.
    let big: Vec<u8> = confab_extract::corpus::words(7, 200_000).into_bytes();
    let info = upload_ok(c, "alice", "big.txt", &big).await;
    let (first, data) = download(c, "alice", &info.id).await.unwrap();
    assert_eq!(first.unwrap(), info);
    assert_eq!(data, big);
}

#[tokio::test]
async fn delete_reclaims_bytes_only_when_unreferenced() {
    let mut app = spawn_app().await;
    let data = b"shared between users";
    let a = upload_ok(&mut app.client, "alice", "a.txt", data).await;
    let b = upload_ok(&mut app.client, "bob", "b.txt", data).await;
    assert_eq!(a.sha256, b.sha256);
    let c = &mut app.client;
    c.delete_file(req(
        "alice",
        DeleteFileRequest {
            file_id: a.id.clone(),
        },
    ))
    .await
    .unwrap();
    assert_code(
        c.delete_file(req(
            "alice",
            DeleteFileRequest {
                file_id: a.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
        "file",
    );
    assert!(
        app.store.has_blob(&a.sha256).await.unwrap(),
        "bob still references the bytes"
    );
    assert_eq!(download(c, "bob", &b.id).await.unwrap().1, data);
    let r = c
        .release_files(req(
            "bob",
            ReleaseFilesRequest {
                file_ids: vec![b.id.clone(), "unknown".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reclaimed, 1);
    assert!(!app.store.has_blob(&a.sha256).await.unwrap());
    // Uploading the same bytes again works after reclamation.
    upload_ok(c, "alice", "a.txt", data).await;
}
