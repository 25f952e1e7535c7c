//! PDF: one part per page (lopdf), decompression bounded, page tree walked with lopdf's
//! loop-safe iterator.

use crate::types::{ExtractedPart, PartKind};
use lopdf::{Document, LoadOptions};

use crate::error::{ExtractError, Result, human_size};
use crate::extract::{Limits, part};

pub fn extract(data: &[u8], limits: &Limits) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let options = LoadOptions {
        max_decompressed_size: Some(limits.max_pdf_stream_bytes),
        ..Default::default()
    };
    let doc = Document::load_mem_with_options(data, options).map_err(|e| match e {
        lopdf::Error::Decompress(_) => stream_too_big(limits),
        lopdf::Error::Decryption(_) | lopdf::Error::InvalidPassword => ExtractError::invalid(
            "the PDF is password-protected; remove the password and upload it again",
        ),
        e => ExtractError::invalid(format!("the PDF is corrupt or truncated: {e}")),
    })?;
    limits.check_time()?;
    if doc.is_encrypted() {
        return Err(ExtractError::invalid(
            "the PDF is password-protected; remove the password and upload it again",
        ));
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(ExtractError::invalid(
            "the PDF has no readable pages (its page tree is missing, empty or loops)",
        ));
    }
    if pages.len() > limits.max_pdf_pages {
        return Err(ExtractError::invalid(format!(
            "the PDF has {} pages; at most {} are accepted",
            pages.len(),
            limits.max_pdf_pages
        )));
    }
    let mut warnings = Vec::new();
    let mut parts = Vec::with_capacity(pages.len());
    let mut unreadable = 0usize;
    let mut empty = 0usize;
    for &number in pages.keys() {
        limits.check_time()?;
        let mut text = String::new();
        let mut failed = false;
        for chunk in doc.extract_text_chunks_with_limit(&[number], limits.max_pdf_stream_bytes) {
            match chunk {
                Ok(t) => text.push_str(&t),
                Err(lopdf::Error::Decompress(_)) => return Err(stream_too_big(limits)),
                Err(_) => failed = true,
            }
        }
        let text = tidy(&text);
        if failed && text.is_empty() {
            unreadable += 1;
        } else if text.is_empty() {
            empty += 1;
        }
        parts.push(part(PartKind::Page, format!("Page {number}"), text));
    }
    if unreadable > 0 {
        warnings.push(format!(
            "{unreadable} page(s) could not be decoded (unsupported fonts or damaged content)"
        ));
    }
    if empty > 0 {
        warnings.push(format!(
            "{empty} page(s) have no text layer (scanned images?); their content is not included"
        ));
    }
    Ok((parts, warnings))
}

fn stream_too_big(limits: &Limits) -> ExtractError {
    ExtractError::invalid(format!(
        "the PDF contains a stream that inflates beyond {} (possible decompression bomb); it was not processed",
        human_size(limits.max_pdf_stream_bytes as u64)
    ))
}

/// Trims trailing spaces per line and collapses runs of blank lines.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_owned()
}
