//! The life of one attachment in the composer: pre-check → start → chunks → finish.
//!
//! Browsers cannot client-stream over grpc-web, so the app uploads with chunked unary
//! calls; this type decides which byte range goes next, tracks the server's
//! acknowledged offset, and says what the chip should show.

use std::ops::Range;

use crate::format::human_bytes;

/// Default server limit (MAX_FILE_SIZE_MB=10) until the server tells us its own.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Chunks stay small enough that the progress bar moves on a fast link.
pub const PREFERRED_CHUNK_BYTES: u64 = 256 * 1024;

const DOCUMENT_EXTS: &[&str] = &["pdf", "docx", "xlsx", "csv", "tsv"];
const IMAGE_EXTS: &[&str] = &["png", "jpg", "jpeg", "webp", "gif"];
const TEXT_EXTS: &[&str] = &[
    "txt", "md", "markdown", "json", "log", "yaml", "yml", "toml", "xml", "html", "css", "rs",
    "py", "js", "ts", "tsx", "jsx", "go", "java", "c", "h", "cpp", "hpp", "cs", "rb", "php", "sh",
    "sql", "ini", "cfg", "proto", "kt", "swift",
];
/// Formats people often try that the server cannot read, with the hint we show.
const KNOWN_UNSUPPORTED: &[(&str, &str)] = &[
    ("doc", "save it as .docx"),
    ("xls", "save it as .xlsx"),
    ("ppt", "export it to PDF"),
    ("pptx", "export it to PDF"),
    ("heic", "convert it to JPEG or PNG"),
    ("svg", "convert it to PNG"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    Document,
    Image,
    Text,
}

fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// Client-side checks before anything is sent: size and (by name / declared type) kind.
/// The server still decides by content; this only avoids obviously doomed uploads.
pub fn precheck(
    name: &str,
    size: u64,
    mime: Option<&str>,
    max_file_bytes: u64,
) -> Result<LocalKind, String> {
    if size == 0 {
        return Err(format!("{name} is empty"));
    }
    if size > max_file_bytes {
        return Err(format!(
            "{name} is {}; the limit is {}",
            human_bytes(size),
            human_bytes(max_file_bytes)
        ));
    }
    let mime = mime.unwrap_or("").to_ascii_lowercase();
    let ext = extension(name);
    if let Some(ext) = ext.as_deref() {
        if IMAGE_EXTS.contains(&ext) {
            return Ok(LocalKind::Image);
        }
        if DOCUMENT_EXTS.contains(&ext) {
            return Ok(LocalKind::Document);
        }
        if TEXT_EXTS.contains(&ext) {
            return Ok(LocalKind::Text);
        }
        if let Some((_, hint)) = KNOWN_UNSUPPORTED.iter().find(|(e, _)| *e == ext) {
            return Err(format!("{name}: .{ext} files are not supported — {hint}"));
        }
    }
    if matches!(
        mime.as_str(),
        "image/png" | "image/jpeg" | "image/webp" | "image/gif"
    ) {
        return Ok(LocalKind::Image);
    }
    if mime.starts_with("text/") {
        return Ok(LocalKind::Text);
    }
    if mime == "application/pdf" {
        return Ok(LocalKind::Document);
    }
    Err(format!(
        "{name}: this file type is not supported (PDF, Word .docx, Excel .xlsx, CSV, text and PNG/JPEG/WebP/GIF images are)"
    ))
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Pre-check passed, StartUpload not answered yet.
    Queued,
    /// Chunks in flight.
    Uploading,
    /// All bytes acknowledged; FinishUpload (type detection, extraction) running.
    Processing,
    Ready,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub name: String,
    pub size: u64,
    pub kind: LocalKind,
    pub phase: Phase,
    pub upload_id: Option<String>,
    pub chunk_bytes: u64,
    /// Contiguous bytes the server acknowledged.
    pub received: u64,
    pub file_id: Option<String>,
    /// Set when the server stored the file but could not extract text from it.
    pub warning: Option<String>,
}

impl Upload {
    pub fn new(name: impl Into<String>, size: u64, kind: LocalKind) -> Self {
        Self {
            name: name.into(),
            size,
            kind,
            phase: Phase::Queued,
            upload_id: None,
            chunk_bytes: PREFERRED_CHUNK_BYTES,
            received: 0,
            file_id: None,
            warning: None,
        }
    }

    /// StartUpload answered.
    pub fn started(
        &mut self,
        upload_id: impl Into<String>,
        max_chunk_bytes: u32,
        max_file_bytes: u64,
    ) {
        if max_file_bytes > 0 && self.size > max_file_bytes {
            self.fail(format!(
                "{} is {}; the limit is {}",
                self.name,
                human_bytes(self.size),
                human_bytes(max_file_bytes)
            ));
            return;
        }
        self.upload_id = Some(upload_id.into());
        let server_max = if max_chunk_bytes == 0 {
            PREFERRED_CHUNK_BYTES
        } else {
            u64::from(max_chunk_bytes)
        };
        self.chunk_bytes = server_max.clamp(1, PREFERRED_CHUNK_BYTES);
        self.phase = Phase::Uploading;
    }

    /// The byte range to send next, or `None` when every byte is acknowledged
    /// (or the upload is not in the uploading phase).
    pub fn next_chunk(&self) -> Option<Range<u64>> {
        if self.phase != Phase::Uploading || self.received >= self.size {
            return None;
        }
        Some(self.received..(self.received + self.chunk_bytes).min(self.size))
    }

    /// UploadChunk answered with the server's contiguous byte count.
    pub fn chunk_acked(&mut self, received_bytes: u64) -> Result<(), String> {
        if self.phase != Phase::Uploading {
            return Err("chunk acknowledged outside of an upload".into());
        }
        if received_bytes > self.size {
            let msg = format!(
                "server acknowledged {received_bytes} of {} bytes",
                self.size
            );
            self.fail(msg.clone());
            return Err(msg);
        }
        // A smaller count than before means the server lost data: resend from there.
        self.received = received_bytes;
        if self.received == self.size {
            self.phase = Phase::Processing;
        }
        Ok(())
    }

    /// FinishUpload answered.
    pub fn finished(&mut self, file_id: impl Into<String>, extraction_error: Option<String>) {
        self.file_id = Some(file_id.into());
        self.warning = extraction_error.filter(|e| !e.is_empty());
        self.received = self.size;
        self.phase = Phase::Ready;
    }

    pub fn fail(&mut self, message: impl Into<String>) {
        self.phase = Phase::Failed(message.into());
    }

    /// 0.0..=1.0 for the progress bar.
    pub fn progress(&self) -> f64 {
        match self.phase {
            Phase::Ready | Phase::Processing => 1.0,
            _ if self.size == 0 => 0.0,
            _ => self.received as f64 / self.size as f64,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    pub fn is_busy(&self) -> bool {
        matches!(
            self.phase,
            Phase::Queued | Phase::Uploading | Phase::Processing
        )
    }

    pub fn status_label(&self) -> String {
        match &self.phase {
            Phase::Queued => "Waiting…".into(),
            Phase::Uploading => format!("Uploading {}%", (self.progress() * 100.0).floor() as u32),
            Phase::Processing => match self.kind {
                LocalKind::Image => "Checking image…".into(),
                _ => "Extracting text…".into(),
            },
            Phase::Ready => match &self.warning {
                Some(w) => format!("Ready — {w}"),
                None => "Ready".into(),
            },
            Phase::Failed(m) => m.clone(),
        }
    }
}

/// Whether the message can be sent with these attachments: none still busy.
pub fn all_settled(uploads: &[Upload]) -> bool {
    uploads.iter().all(|u| !u.is_busy())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    #[test]
    fn precheck_accepts_supported_types() {
        assert_eq!(
            precheck("a.PDF", 10, None, DEFAULT_MAX_FILE_BYTES),
            Ok(LocalKind::Document)
        );
        assert_eq!(
            precheck("b.docx", 10, None, DEFAULT_MAX_FILE_BYTES),
            Ok(LocalKind::Document)
        );
        assert_eq!(
            precheck("c.xlsx", 10, None, DEFAULT_MAX_FILE_BYTES),
            Ok(LocalKind::Document)
        );
        assert_eq!(
            precheck("d.jpeg", 10, None, DEFAULT_MAX_FILE_BYTES),
            Ok(LocalKind::Image)
        );
        assert_eq!(
            precheck("notes.md", 10, None, DEFAULT_MAX_FILE_BYTES),
            Ok(LocalKind::Text)
        );
        assert_eq!(
            precheck("noext", 10, Some("image/png"), DEFAULT_MAX_FILE_BYTES),
            Ok(LocalKind::Image)
        );
        assert_eq!(
            precheck("README", 10, Some("text/plain"), DEFAULT_MAX_FILE_BYTES),
            Ok(LocalKind::Text)
        );
    }

    #[test]
    fn precheck_rejects_oversize_empty_and_unsupported_with_a_reason() {
        let e = precheck("big.pdf", 14 * MB, None, 10 * MB).unwrap_err();
        assert_eq!(e, "big.pdf is 14.0 MB; the limit is 10.0 MB");
        assert_eq!(
            precheck("e.txt", 0, None, MB).unwrap_err(),
            "e.txt is empty"
        );
        let e = precheck("old.doc", 10, None, MB).unwrap_err();
        assert!(e.contains("save it as .docx"), "{e}");
        let e = precheck("x.zip", 10, Some("application/zip"), MB).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        assert!(precheck(".pdf", 10, None, MB).is_err());
    }

    #[test]
    fn chunks_follow_the_acknowledged_offset_until_processing() {
        let mut u = Upload::new("f.pdf", 600 * 1024, LocalKind::Document);
        assert_eq!(u.next_chunk(), None, "no chunk before StartUpload answered");
        u.started("up1", 4 * 1024 * 1024, 10 * MB);
        assert_eq!(u.phase, Phase::Uploading);
        assert_eq!(u.next_chunk(), Some(0..256 * 1024));
        u.chunk_acked(256 * 1024).unwrap();
        assert_eq!(u.status_label(), "Uploading 42%");
        assert_eq!(u.next_chunk(), Some(256 * 1024..512 * 1024));
        // the server lost the second chunk: resend from its offset
        u.chunk_acked(256 * 1024).unwrap();
        assert_eq!(u.next_chunk(), Some(256 * 1024..512 * 1024));
        u.chunk_acked(512 * 1024).unwrap();
        assert_eq!(u.next_chunk(), Some(512 * 1024..600 * 1024));
        u.chunk_acked(600 * 1024).unwrap();
        assert_eq!(u.phase, Phase::Processing);
        assert_eq!(u.next_chunk(), None);
        assert_eq!(u.status_label(), "Extracting text…");
        assert!(u.is_busy());
        u.finished("file-1", Some(String::new()));
        assert!(u.is_ready());
        assert_eq!(u.file_id.as_deref(), Some("file-1"));
        assert_eq!(u.status_label(), "Ready");
        assert_eq!(u.progress(), 1.0);
    }

    #[test]
    fn small_server_chunk_limit_wins_and_zero_means_default() {
        let mut u = Upload::new("a.png", 100, LocalKind::Image);
        u.started("u", 30, MB);
        assert_eq!(u.next_chunk(), Some(0..30));
        let mut v = Upload::new("a.png", 100, LocalKind::Image);
        v.started("u", 0, 0);
        assert_eq!(v.next_chunk(), Some(0..100));
    }

    #[test]
    fn server_limit_smaller_than_file_fails_at_start() {
        let mut u = Upload::new("a.pdf", 3 * MB, LocalKind::Document);
        u.started("u", 1024, 2 * MB);
        assert_eq!(
            u.phase,
            Phase::Failed("a.pdf is 3.0 MB; the limit is 2.0 MB".into())
        );
        assert_eq!(u.next_chunk(), None);
        assert!(!u.is_busy());
    }

    #[test]
    fn over_acknowledgement_fails_and_settled_logic() {
        let mut u = Upload::new("a.txt", 10, LocalKind::Text);
        u.started("u", 1024, MB);
        assert!(u.chunk_acked(11).is_err());
        assert!(matches!(u.phase, Phase::Failed(_)));
        let mut ok = Upload::new("b.txt", 10, LocalKind::Text);
        assert!(!all_settled(&[u.clone(), ok.clone()]));
        ok.finished("f", Some("no text found".into()));
        assert_eq!(ok.status_label(), "Ready — no text found");
        assert!(all_settled(&[u, ok]));
    }
}
