//! Type by content (magic bytes and structure), never by name or declared type.

use std::io::Cursor;

use crate::error::{ExtractError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Pdf,
    Docx,
    Xlsx,
    Csv(u8),
    Text(TextFlavor),
    Image(ImageFormat),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFlavor {
    Plain,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Webp,
    Gif,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
            Self::Gif => "gif",
        }
    }
}

impl Detected {
    pub fn mime(self) -> &'static str {
        match self {
            Self::Pdf => "application/pdf",
            Self::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Self::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Self::Csv(b'\t') => "text/tab-separated-values",
            Self::Csv(_) => "text/csv",
            Self::Text(TextFlavor::Plain) => "text/plain",
            Self::Text(TextFlavor::Markdown) => "text/markdown",
            Self::Text(TextFlavor::Json) => "application/json",
            Self::Image(f) => match f {
                ImageFormat::Png => "image/png",
                ImageFormat::Jpeg => "image/jpeg",
                ImageFormat::Webp => "image/webp",
                ImageFormat::Gif => "image/gif",
            },
        }
    }
}

pub const SUPPORTED: &str = "PDF, Word (.docx), Excel (.xlsx), CSV, plain text (txt, md, json, source code) and PNG, JPEG, WEBP or GIF images";

/// Decides what `data` is. `filename` only separates CSV from other text and Markdown
/// from plain text once the content is known to be text.
pub fn detect(data: &[u8], filename: &str) -> Result<Detected> {
    if data.is_empty() {
        return Err(ExtractError::invalid("the file is empty"));
    }
    let head = &data[..data.len().min(1024)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Ok(Detected::Pdf);
    }
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Detected::Image(ImageFormat::Png));
    }
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Detected::Image(ImageFormat::Jpeg));
    }
    if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        return Ok(Detected::Image(ImageFormat::Gif));
    }
    if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        return Ok(Detected::Image(ImageFormat::Webp));
    }
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        return detect_zip(data);
    }
    if let Some(t) = infer::get(data) {
        // Binary formats infer knows but we do not accept.
        if t.matcher_type() != infer::MatcherType::Text {
            return Err(ExtractError::invalid(format!(
                "this file's content is {} ({}), which is not supported; supported: {SUPPORTED}",
                t.mime_type(),
                t.extension()
            )));
        }
    }
    detect_text(data, filename)
}

fn detect_zip(data: &[u8]) -> Result<Detected> {
    let archive = zip::ZipArchive::new(Cursor::new(data)).map_err(|e| {
        ExtractError::invalid(format!(
            "the file looks like a ZIP archive but is corrupt: {e}"
        ))
    })?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    if has("word/document.xml") {
        return Ok(Detected::Docx);
    }
    if has("xl/workbook.xml") {
        return Ok(Detected::Xlsx);
    }
    let what = if names.iter().any(|n| n.starts_with("ppt/")) {
        "a PowerPoint presentation (.pptx)"
    } else if has("content.xml") {
        "an OpenDocument file"
    } else {
        "a ZIP archive"
    };
    Err(ExtractError::invalid(format!(
        "this file's content is {what}, which is not supported; supported: {SUPPORTED}"
    )))
}

fn extension(filename: &str) -> String {
    filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

/// UTF-8 (BOM allowed), no NULs, few control characters.
fn detect_text(data: &[u8], filename: &str) -> Result<Detected> {
    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() && e.valid_up_to() + 4 > body.len() => {
            // Cut inside the last character: still text.
            std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(e) => {
            let binary = body.iter().take(8192).filter(|&&b| b == 0).count() > 0;
            return Err(ExtractError::invalid(if binary {
                format!(
                    "this file's content is binary data of an unknown type; supported: {SUPPORTED}"
                )
            } else {
                format!(
                    "this looks like a text file but it is not valid UTF-8 (byte {}); save it as UTF-8 and upload it again",
                    e.valid_up_to()
                )
            }));
        }
    };
    let sample: Vec<char> = text.chars().take(65536).collect();
    let control = sample
        .iter()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c'))
        .count();
    if sample.contains(&'\0') || control * 100 > sample.len().max(1) {
        return Err(ExtractError::invalid(format!(
            "this file's content is binary data of an unknown type; supported: {SUPPORTED}"
        )));
    }
    let ext = extension(filename);
    if let Some(delim) = csv_delimiter(text, &ext) {
        return Ok(Detected::Csv(delim));
    }
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    {
        return Ok(Detected::Text(TextFlavor::Json));
    }
    if matches!(ext.as_str(), "md" | "markdown") {
        return Ok(Detected::Text(TextFlavor::Markdown));
    }
    Ok(Detected::Text(TextFlavor::Plain))
}

/// CSV when the first lines split into the same number (≥ 2) of fields. A `.csv`/`.tsv`
/// name lowers the bar (two lines suffice); without it we want at least three lines.
fn csv_delimiter(text: &str, ext: &str) -> Option<u8> {
    let named = matches!(ext, "csv" | "tsv");
    if !named
        && matches!(
            ext,
            "md" | "markdown" | "json" | "rs" | "py" | "js" | "ts" | "txt"
        )
    {
        return None;
    }
    let candidates: &[u8] = if ext == "tsv" { b"\t" } else { b",;\t" };
    let sample = &text[..text.floor_char_boundary(64 * 1024)];
    let min_lines = if named { 1 } else { 3 };
    for &d in candidates {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(d)
            .has_headers(false)
            .flexible(true)
            .from_reader(sample.as_bytes());
        let mut widths = Vec::new();
        for rec in reader.records().take(20) {
            match rec {
                Ok(r) => widths.push(r.len()),
                Err(_) => break,
            }
        }
        // The sample may cut the last line.
        if widths.len() > 2 && sample.len() < text.len() {
            widths.pop();
        }
        if widths.len() >= min_lines && widths[0] >= 2 && widths.iter().all(|&w| w == widths[0]) {
            return Some(d);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_kinds() {
        assert_eq!(
            detect(b"a,b\n1,2\n3,4\n4,5\n", "x").unwrap(),
            Detected::Csv(b',')
        );
        assert_eq!(
            detect(b"hello world\n", "x.csv").unwrap(),
            Detected::Text(TextFlavor::Plain)
        );
        assert_eq!(
            detect(b"{\"a\": 1}", "data.txt").unwrap(),
            Detected::Text(TextFlavor::Json)
        );
        assert_eq!(
            detect(b"# Title\n", "r.md").unwrap(),
            Detected::Text(TextFlavor::Markdown)
        );
        assert!(detect(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0", "a.pdf").is_err());
        assert!(detect(b"", "a.txt").is_err());
        assert!(detect(&[0xff, 0xfe, 0x41, 0x00, 0x42, 0x00], "a.txt").is_err());
    }
}
