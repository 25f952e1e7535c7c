//! Uploads: pre-checks, chunked upload with progress, and the thumbnails and extractions
//! shown for files already sent.

use confab_proto::files::v1::{
    Extraction, FileKind, FinishUploadRequest, GetExtractionRequest, GetThumbnailRequest,
    StartUploadRequest, UploadChunkRequest,
};
use confab_web_core::errors::UiError;
use confab_web_core::upload::{LocalKind, Phase, Upload, precheck};
use dioxus::core::spawn_forever;
use dioxus::prelude::*;

use crate::api::{self, call, req, ui_error};
use crate::state::{AppState, PendingFile};

fn update_pending(mut s: AppState, local_id: u64, f: impl FnOnce(&mut PendingFile)) {
    if let Some(p) = s
        .pending
        .write()
        .iter_mut()
        .find(|p| p.local_id == local_id)
    {
        f(p);
    }
}

/// Adds files from the picker or a drop: pre-checks, then uploads each concurrently.
pub fn add_files(mut s: AppState, files: Vec<dioxus::html::FileData>) {
    for file in files {
        let name = file.name();
        let size = file.size();
        let mime = file.content_type().unwrap_or_default();
        let local_id = s.take_local_id();
        let max = *s.max_file_bytes.peek();
        let (upload, ok) = match precheck(&name, size, Some(&mime), max) {
            Ok(kind) => (Upload::new(name.clone(), size, kind), true),
            Err(e) => {
                let mut u = Upload::new(name.clone(), size, LocalKind::Document);
                u.fail(e);
                (u, false)
            }
        };
        s.pending.write().push(PendingFile {
            local_id,
            upload,
            mime: mime.clone(),
            preview_url: None,
        });
        if ok {
            spawn_forever(async move { upload_file(s, local_id, file).await });
        }
    }
}

async fn upload_file(s: AppState, local_id: u64, file: dioxus::html::FileData) {
    let bytes = match file.read_bytes().await {
        Ok(b) => b,
        Err(e) => {
            update_pending(s, local_id, |p| {
                p.upload.fail(format!("could not read the file: {e}"))
            });
            return;
        }
    };
    let Some(mut upload) = s
        .pending
        .peek()
        .iter()
        .find(|p| p.local_id == local_id)
        .map(|p| p.upload.clone())
    else {
        return;
    };
    if upload.kind == LocalKind::Image {
        let mime = if file.content_type().unwrap_or_default().is_empty() {
            "image/png".to_string()
        } else {
            file.content_type().unwrap_or_default()
        };
        let url = api::object_url(&bytes, &mime);
        update_pending(s, local_id, |p| p.preview_url = url);
    }
    let start = StartUploadRequest {
        filename: upload.name.clone(),
        declared_size: upload.size,
        declared_content_type: file.content_type().unwrap_or_default(),
    };
    let started = call(|t| {
        let m = start.clone();
        async move { api::files().start_upload(req(m, &t)).await }
    })
    .await;
    let started = match started {
        Ok(r) => r.into_inner(),
        Err(st) => {
            update_pending(s, local_id, |p| p.upload.fail(ui_error(&st).text));
            return;
        }
    };
    if started.max_file_bytes > 0 {
        let mut mf = s.max_file_bytes;
        mf.set(started.max_file_bytes);
    }
    upload.started(
        started.upload_id.clone(),
        started.max_chunk_bytes,
        started.max_file_bytes,
    );
    update_pending(s, local_id, |p| p.upload = upload.clone());
    while let Some(range) = upload.next_chunk() {
        let chunk = UploadChunkRequest {
            upload_id: started.upload_id.clone(),
            offset: range.start,
            data: bytes[range.start as usize..range.end as usize].to_vec(),
        };
        let r = call(|t| {
            let m = chunk.clone();
            async move { api::files().upload_chunk(req(m, &t)).await }
        })
        .await;
        match r {
            Ok(r) => {
                if let Err(e) = upload.chunk_acked(r.into_inner().received_bytes) {
                    upload.fail(e);
                }
            }
            Err(st) => upload.fail(ui_error(&st).text),
        }
        update_pending(s, local_id, |p| p.upload = upload.clone());
    }
    if upload.phase != Phase::Processing {
        return;
    }
    let finish = FinishUploadRequest {
        upload_id: started.upload_id.clone(),
        sha256: String::new(),
    };
    let r = call(|t| {
        let m = finish.clone();
        async move { api::files().finish_upload(req(m, &t)).await }
    })
    .await;
    match r {
        Ok(r) => {
            let f = r.into_inner().file.unwrap_or_default();
            let is_image = f.kind == FileKind::Image as i32;
            upload.finished(f.id.clone(), Some(f.extraction_error.clone()));
            if is_image {
                upload.kind = LocalKind::Image;
            }
            let mime = f.mime_type.clone();
            update_pending(s, local_id, |p| {
                p.upload = upload.clone();
                if !mime.is_empty() {
                    p.mime = mime;
                }
            });
        }
        Err(st) => {
            upload.fail(ui_error(&st).text);
            update_pending(s, local_id, |p| p.upload = upload.clone());
        }
    }
}

pub async fn load_thumbnail(mut s: AppState, file_id: String) {
    if s.thumbnails.peek().contains_key(&file_id) {
        return;
    }
    // Mark as loading so several renders don't all fetch it.
    s.thumbnails.write().insert(file_id.clone(), String::new());
    let fid = file_id.clone();
    let r = call(|t| {
        let file_id = fid.clone();
        async move {
            api::files()
                .get_thumbnail(req(GetThumbnailRequest { file_id }, &t))
                .await
        }
    })
    .await;
    if let Ok(th) = r {
        let th = th.into_inner();
        if let Some(url) = api::object_url(&th.data, &th.mime_type) {
            s.thumbnails.write().insert(file_id, url);
        }
    }
}

pub async fn load_extraction(file_id: String) -> Result<Extraction, UiError> {
    call(|t| {
        let file_id = file_id.clone();
        async move {
            api::files()
                .get_extraction(req(GetExtractionRequest { file_id }, &t))
                .await
        }
    })
    .await
    .map(|r| r.into_inner())
    .map_err(|st| ui_error(&st))
}
