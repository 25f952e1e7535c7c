//! PDF: one part per page. Text comes from pdfium (word spacing, reading order, rotated
//! pages, Type3/CID fonts, empty-password encryption) when it is bound, else from lopdf.
//! Pages without a text layer are rendered by pdfium and read by Tesseract, within a
//! per-page time budget and a page cap.
//!
//! pdfium runs in-process and cannot be interrupted inside a call, so the limits hold
//! around it: every compressed stream is inflated first against a byte cap (a bomb is
//! refused before pdfium sees it), the page count is capped before any page is parsed,
//! and the deadline is checked between pages.

use std::io::Read;
use std::time::Duration;

use lopdf::{Document, LoadOptions};
use pdfium_render::prelude::{
    PdfBitmapFormat, PdfDocument, PdfPoints, PdfRect, PdfRenderConfig, PdfiumError,
    PdfiumInternalError,
};

use crate::error::{ExtractError, Result, human_size};
use crate::extract::{Limits, ocr, part, pdfium};
use crate::types::{ExtractedPart, PartKind};

pub fn extract(data: &[u8], limits: &Limits) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    check_streams(data, limits)?;
    limits.check_time()?;
    match pdfium::engine() {
        Some(engine) => {
            let doc = engine
                .load_pdf_from_byte_slice(data, None)
                .map_err(open_error)?;
            extract_pdfium(&doc, limits)
        }
        None => {
            let (parts, mut warnings) = extract_lopdf(data, limits)?;
            warnings.push(
                "the PDF was read with the basic engine (pdfium is not installed here), so some text may be missing"
                    .into(),
            );
            Ok((parts, warnings))
        }
    }
}

fn password_error() -> ExtractError {
    ExtractError::invalid("the PDF is password-protected; remove the password and upload it again")
}

fn open_error(e: PdfiumError) -> ExtractError {
    match e {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => {
            password_error()
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => {
            ExtractError::invalid(
                "the PDF uses an encryption scheme that cannot be opened; save it without encryption and upload it again",
            )
        }
        _ => ExtractError::invalid("the PDF is corrupt or truncated: no PDF reader could open it"),
    }
}

fn too_many_pages(n: usize, limits: &Limits) -> ExtractError {
    ExtractError::invalid(format!(
        "the PDF has {n} pages; at most {} are accepted",
        limits.max_pdf_pages
    ))
}

fn extract_pdfium(
    doc: &PdfDocument<'_>,
    limits: &Limits,
) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let pages = doc.pages();
    let count = usize::try_from(pages.len()).unwrap_or(0);
    if count == 0 {
        return Err(ExtractError::invalid(
            "the PDF has no readable pages (its page tree is missing, empty or loops)",
        ));
    }
    if count > limits.max_pdf_pages {
        return Err(too_many_pages(count, limits));
    }
    // Every character on the page, wherever its coordinates put it (some producers place
    // text outside the media box).
    let everywhere = PdfRect::new(
        PdfPoints::new(-1e7),
        PdfPoints::new(-1e7),
        PdfPoints::new(1e7),
        PdfPoints::new(1e7),
    );
    let mut parts = Vec::with_capacity(count);
    let mut ocr = OcrRun::default();
    let mut unreadable = 0usize;
    for index in 0..count {
        limits.check_time()?;
        let label = format!("Page {}", index + 1);
        let Ok(page) = pages.get(index as i32) else {
            unreadable += 1;
            parts.push(part(PartKind::Page, label, String::new()));
            continue;
        };
        let text = page
            .text()
            .map(|t| tidy(&t.inside_rect(everywhere)))
            .unwrap_or_default();
        if !text.is_empty() {
            parts.push(part(PartKind::Page, label, text));
            continue;
        }
        let mut p = part(PartKind::Page, label.clone(), String::new());
        if let Some(read) = ocr.page(&page, limits) {
            p.label = ocr::label(&label, read.confidence);
            p.ocr_confidence = Some(read.confidence.round().clamp(0.0, 100.0) as u8);
            p.text = read.text;
        }
        parts.push(p);
    }
    let mut warnings = ocr.warnings(limits);
    if unreadable > 0 {
        warnings.push(format!(
            "{unreadable} page(s) could not be decoded (damaged page objects)"
        ));
    }
    Ok((parts, warnings))
}

/// A page as an 8-bit grey bitmap (longest side `OCR_MAX_SIDE`), as OCR sees it.
fn render_gray(page: &pdfium_render::prelude::PdfPage<'_>) -> Option<(u32, u32, Vec<u8>)> {
    // pdfium renders into BGRA (rendering straight into a grey bitmap trips its checks).
    let config = PdfRenderConfig::new()
        .set_target_width(OCR_MAX_SIDE)
        .set_maximum_height(OCR_MAX_SIDE)
        .set_format(PdfBitmapFormat::BGRA)
        .render_form_data(true);
    let bitmap = page.render_with_config(&config).ok()?;
    let (w, h) = (bitmap.width().max(0) as u32, bitmap.height().max(0) as u32);
    let raw = bitmap.as_raw_bytes();
    let stride = if h == 0 { 0 } else { raw.len() / h as usize };
    if w == 0 || stride < 4 * w as usize {
        return None;
    }
    let mut gray = Vec::with_capacity((w * h) as usize);
    for row in raw.chunks_exact(stride) {
        for px in row[..4 * w as usize].chunks_exact(4) {
            let (b, g, r) = (u32::from(px[0]), u32::from(px[1]), u32::from(px[2]));
            gray.push(((r * 299 + g * 587 + b * 114) / 1000) as u8);
        }
    }
    Some((w, h, gray))
}

/// Renders page `index` (0-based) of a PDF as OCR would see it: for benchmarks and tests
/// that make a "scan" from a real page. None without pdfium or for an unreadable page.
pub fn render_page_gray(data: &[u8], index: usize) -> Option<(u32, u32, Vec<u8>)> {
    let doc = pdfium::engine()?
        .load_pdf_from_byte_slice(data, None)
        .ok()?;
    let page = doc.pages().get(i32::try_from(index).ok()?).ok()?;
    render_gray(&page)
}

/// OCR across one file's pages: how many were tried, read, skipped and why.
#[derive(Default)]
struct OcrRun {
    tried: usize,
    read: usize,
    skipped_cap: usize,
    timed_out: usize,
    unavailable: usize,
    empty: usize,
    secs: f64,
}

/// Longest side of the bitmap OCR sees: about 200 dpi for a letter page.
const OCR_MAX_SIDE: i32 = 2400;

impl OcrRun {
    fn page(
        &mut self,
        page: &pdfium_render::prelude::PdfPage<'_>,
        limits: &Limits,
    ) -> Option<ocr::OcrText> {
        if !limits.ocr {
            self.empty += 1;
            return None;
        }
        if self.tried >= limits.max_ocr_pages {
            self.skipped_cap += 1;
            return None;
        }
        let budget = limits.ocr_page_budget.min(limits.remaining());
        if budget < Duration::from_millis(500) {
            self.timed_out += 1;
            return None;
        }
        if !ocr::available() {
            self.unavailable += 1;
            return None;
        }
        self.tried += 1;
        let Some((w, h, gray)) = render_gray(page) else {
            self.empty += 1;
            return None;
        };
        match ocr::recognize_gray(w, h, &gray, budget) {
            Ok(t) if t.words > 0 => {
                self.read += 1;
                self.secs += t.elapsed.as_secs_f64();
                Some(t)
            }
            Ok(_) => {
                self.empty += 1;
                None
            }
            Err(ocr::OcrError::TimedOut(_)) => {
                self.timed_out += 1;
                None
            }
            Err(ocr::OcrError::Unavailable) => {
                self.unavailable += 1;
                None
            }
            Err(ocr::OcrError::Failed(_)) => {
                self.empty += 1;
                None
            }
        }
    }

    fn warnings(&self, limits: &Limits) -> Vec<String> {
        let mut w = Vec::new();
        if self.read > 0 {
            w.push(format!(
                "{} page(s) have no text layer and were read by OCR ({:.1} s); OCR text may contain errors",
                self.read, self.secs
            ));
        }
        if self.skipped_cap > 0 {
            w.push(format!(
                "{} more page(s) without a text layer were not read: OCR covers at most {} pages per file",
                self.skipped_cap, limits.max_ocr_pages
            ));
        }
        if self.timed_out > 0 {
            w.push(format!(
                "{} page(s) without a text layer were not read: OCR ran out of its time budget",
                self.timed_out
            ));
        }
        if self.unavailable > 0 {
            w.push(format!(
                "{} page(s) have no text layer and OCR is not installed here; their content is not included",
                self.unavailable
            ));
        }
        if self.empty > 0 {
            w.push(format!(
                "{} page(s) have no text layer and no readable text in their images",
                self.empty
            ));
        }
        w
    }
}

/// Inflates every Flate stream in the file (found by its `stream` keyword, whatever the
/// object structure says) into a counter: one over `max_pdf_stream_bytes`, or all of
/// them over `max_inflated_bytes`, is refused as a bomb. Streams that do not inflate
/// (other filters, encrypted) are left to the engine.
fn check_streams(data: &[u8], limits: &Limits) -> Result<()> {
    let max_one = limits.max_pdf_stream_bytes as u64;
    let mut total = 0u64;
    let mut at = 0usize;
    let mut scratch = vec![0u8; 64 * 1024];
    while let Some(found) = find(&data[at..], b"stream") {
        let mut start = at + found + b"stream".len();
        at = start;
        // "endstream" also contains "stream": only a keyword followed by EOL starts data.
        if data[..start - b"stream".len()].ends_with(b"end") {
            continue;
        }
        match data.get(start..start + 2) {
            Some([b'\r', b'\n']) => start += 2,
            Some([b'\n', _]) | Some([b'\r', _]) => start += 1,
            _ => continue,
        }
        // zlib header: CMF 0x78 (deflate, 32 KB window) and a valid check value.
        let (Some(&cmf), Some(&flg)) = (data.get(start), data.get(start + 1)) else {
            continue;
        };
        if cmf != 0x78 || ((u16::from(cmf) << 8) | u16::from(flg)) % 31 != 0 {
            continue;
        }
        let mut z = flate2::read::ZlibDecoder::new(&data[start..]);
        let mut one = 0u64;
        loop {
            match z.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    one += n as u64;
                    total += n as u64;
                    if one > max_one || total > limits.max_inflated_bytes {
                        return Err(stream_too_big(limits));
                    }
                }
            }
            if one % (8 << 20) < scratch.len() as u64 {
                limits.check_time()?;
            }
        }
        at = start + (z.total_in() as usize).max(1);
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// lopdf, when pdfium is not bound: structure and limits as before, plainer text.
fn extract_lopdf(data: &[u8], limits: &Limits) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let options = LoadOptions {
        max_decompressed_size: Some(limits.max_pdf_stream_bytes),
        ..Default::default()
    };
    let doc = Document::load_mem_with_options(data, options).map_err(|e| match e {
        lopdf::Error::Decompress(_) => stream_too_big(limits),
        lopdf::Error::Decryption(_) | lopdf::Error::InvalidPassword => password_error(),
        e => ExtractError::invalid(format!("the PDF is corrupt or truncated: {e}")),
    })?;
    limits.check_time()?;
    if doc.is_encrypted() {
        return Err(password_error());
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(ExtractError::invalid(
            "the PDF has no readable pages (its page tree is missing, empty or loops)",
        ));
    }
    if pages.len() > limits.max_pdf_pages {
        return Err(too_many_pages(pages.len(), limits));
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

/// Normalises line ends (pdfium ends lines with CR LF), drops pdfium's marker characters,
/// trims trailing spaces per line and collapses runs of blank lines.
fn tidy(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
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
        out.extend(
            line.chars()
                .filter(|&c| !matches!(c, '\u{0}' | '\u{2}' | '\u{fffe}')),
        );
        out.push('\n');
    }
    out.trim().to_owned()
}
