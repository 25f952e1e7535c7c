//! Extraction into structure: pages, sheets, sections, tables. Every extractor is
//! synchronous, bounded (sizes, counts, a deadline) and never trusts declared sizes; the
//! service runs them on a blocking thread with a timeout and a concurrency limit.

pub mod docx;
pub mod image;
pub mod pdf;
pub mod sheet;
pub mod text;
pub mod xlsx;
pub mod zipsafe;

use std::time::{Duration, Instant};

use crate::types::{ExtractedPart, FileKind, ImageInfo, PartKind, Table, TableRow};

use crate::detect::{Detected, TextFlavor};
use crate::error::{ExtractError, Result};
use crate::tokens;

/// Bounds on the work one file may cause.
#[derive(Debug, Clone)]
pub struct Limits {
    pub deadline: Instant,
    /// Entries in a DOCX/XLSX archive.
    pub max_zip_entries: usize,
    /// Total bytes inflated from an archive (counted while reading, not declared).
    pub max_inflated_bytes: u64,
    /// Largest decompressed PDF stream.
    pub max_pdf_stream_bytes: usize,
    pub max_pdf_pages: usize,
    pub max_image_pixels: u64,
    pub max_image_side: u32,
    /// Data rows of a sheet kept in full; beyond that the sheet is summarised.
    pub max_sheet_rows: usize,
    pub max_sheet_columns: usize,
    /// Extracted text kept per file.
    pub max_text_bytes: usize,
}

impl Limits {
    pub fn new(budget: Duration) -> Self {
        Self {
            deadline: Instant::now() + budget,
            max_zip_entries: 5_000,
            max_inflated_bytes: 256 * 1024 * 1024,
            max_pdf_stream_bytes: 64 * 1024 * 1024,
            max_pdf_pages: 2_000,
            max_image_pixels: 40_000_000,
            max_image_side: 20_000,
            max_sheet_rows: 200,
            max_sheet_columns: 64,
            max_text_bytes: 16 * 1024 * 1024,
        }
    }

    /// Fails once the time budget is spent (checked between units of work).
    pub fn check_time(&self) -> Result<()> {
        if Instant::now() > self.deadline {
            Err(ExtractError::invalid(
                "the file took too long to process; it may be corrupt or deliberately complex",
            ))
        } else {
            Ok(())
        }
    }
}

/// A decoded image: what the record keeps about it.
#[derive(Debug, Clone)]
pub struct ImageOutput {
    pub info: ImageInfo,
    pub thumbnail: Option<crate::types::Thumbnail>,
}

/// The result of extracting one file.
#[derive(Debug, Clone)]
pub struct Extracted {
    pub kind: FileKind,
    pub parts: Vec<ExtractedPart>,
    pub warnings: Vec<String>,
    pub image: Option<ImageOutput>,
}

impl Extracted {
    pub fn total_tokens(&self) -> u32 {
        self.parts
            .iter()
            .fold(0u32, |acc, p| acc.saturating_add(p.token_count))
    }
}

/// Extracts `data` of detected type `detected`. Panics inside third-party parsers are
/// caught and reported as a corrupt file.
pub fn extract(detected: Detected, data: &[u8], limits: &Limits) -> Result<Extracted> {
    let run = || -> Result<Extracted> {
        let (kind, mut parts, mut warnings, image) = match detected {
            Detected::Pdf => {
                let (p, w) = pdf::extract(data, limits)?;
                (FileKind::Pdf, p, w, None)
            }
            Detected::Docx => {
                let (p, w) = docx::extract(data, limits)?;
                (FileKind::Docx, p, w, None)
            }
            Detected::Xlsx => {
                let (p, w) = xlsx::extract(data, limits)?;
                (FileKind::Xlsx, p, w, None)
            }
            Detected::Csv(delim) => {
                let (p, w) = sheet::extract_csv(data, delim, limits)?;
                (FileKind::Csv, p, w, None)
            }
            Detected::Text(flavor) => {
                let (p, w) = text::extract(data, flavor == TextFlavor::Json, limits)?;
                (FileKind::Text, p, w, None)
            }
            Detected::Image(format) => {
                let out = image::inspect(data, format, limits)?;
                (FileKind::Image, Vec::new(), Vec::new(), Some(out))
            }
        };
        cap_text(&mut parts, &mut warnings, limits.max_text_bytes);
        limits.check_time()?;
        for (i, part) in parts.iter_mut().enumerate() {
            part.index = u32::try_from(i + 1).unwrap_or(u32::MAX);
        }
        {
            use rayon::prelude::*;
            parts
                .par_iter_mut()
                .for_each(|part| part.token_count = count_part(part));
        }
        limits.check_time()?;
        Ok(Extracted {
            kind,
            parts,
            warnings,
            image,
        })
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(_) => Err(ExtractError::invalid(format!(
            "the {} could not be read: it is corrupt or uses features we cannot parse",
            describe(detected)
        ))),
    }
}

/// Sheet parts are one big table: count it cell by cell (see `tokens::count_sheet`).
fn count_part(part: &ExtractedPart) -> u32 {
    match part.tables.as_slice() {
        [table] if part.kind == PartKind::Sheet => tokens::count_sheet(&part.text, table),
        _ => tokens::count(&part.text),
    }
}

pub(crate) fn table_width(table: &Table) -> usize {
    table
        .rows
        .iter()
        .map(|r| r.cells.len())
        .chain(std::iter::once(table.header.len()))
        .max()
        .unwrap_or(0)
        .max(1)
}

pub fn describe(d: Detected) -> &'static str {
    match d {
        Detected::Pdf => "PDF",
        Detected::Docx => "Word document",
        Detected::Xlsx => "Excel workbook",
        Detected::Csv(_) => "CSV file",
        Detected::Text(_) => "text file",
        Detected::Image(_) => "image",
    }
}

/// Keeps the extraction under `max` bytes of text, noting what was cut.
fn cap_text(parts: &mut Vec<ExtractedPart>, warnings: &mut Vec<String>, max: usize) {
    let mut used = 0usize;
    let mut cut_at = None;
    for (i, p) in parts.iter_mut().enumerate() {
        if used + p.text.len() > max {
            let keep = p.text.floor_char_boundary(max.saturating_sub(used));
            p.text.truncate(keep);
            p.text.push_str("\n\n[… truncated]");
            cut_at = Some(i + 1);
            break;
        }
        used += p.text.len();
    }
    if let Some(n) = cut_at {
        let total = parts.len();
        parts.truncate(n);
        warnings.push(format!(
            "the extracted text was longer than {} MB and was cut after part {n} of {total}",
            max / (1024 * 1024)
        ));
    }
}

/// Appends what an XML entity reference (`&amp;`, `&#10;`) stands for.
pub(crate) fn push_entity(out: &mut String, r: &quick_xml::events::BytesRef<'_>) {
    match r.resolve_char_ref() {
        Ok(Some(c)) => out.push(c),
        _ => out.push_str(match &**r {
            "amp" => "&",
            "lt" => "<",
            "gt" => ">",
            "quot" => "\"",
            "apos" => "'",
            _ => "",
        }),
    }
}

pub fn part(kind: PartKind, label: impl Into<String>, text: String) -> ExtractedPart {
    ExtractedPart {
        kind,
        index: 0,
        label: label.into(),
        text,
        token_count: 0,
        tables: Vec::new(),
        sheet: None,
    }
}

/// Escapes a cell for a Markdown table.
pub fn md_cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    md_cell_into(&mut out, s);
    out
}

/// Appends `s` escaped for a Markdown table cell (trimmed, `|` escaped, one line).
pub fn md_cell_into(out: &mut String, s: &str) {
    let s = s.trim();
    let mut rest = s;
    while let Some(at) = rest.find(['|', '\n', '\r']) {
        out.push_str(&rest[..at]);
        out.push_str(if rest.as_bytes()[at] == b'|' {
            "\\|"
        } else {
            " "
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// Length in bytes of `md_cell(s)`.
pub fn md_cell_len(s: &str) -> usize {
    let s = s.trim();
    s.len() + s.bytes().filter(|&b| b == b'|').count()
}

/// Renders a table as Markdown (header row, separator, rows padded to the header width).
pub fn render_table(out: &mut String, table: &Table) {
    let width = table_width(table);
    let row = |out: &mut String, cells: &[String]| {
        out.push('|');
        for i in 0..width {
            out.push(' ');
            md_cell_into(out, cells.get(i).map(String::as_str).unwrap_or(""));
            out.push_str(" |");
        }
        out.push('\n');
    };
    row(out, &table.header);
    out.push('|');
    for _ in 0..width {
        out.push_str(" --- |");
    }
    out.push('\n');
    for r in &table.rows {
        row(out, &r.cells);
    }
}

pub fn table_from_rows(mut rows: Vec<Vec<String>>) -> Table {
    let header = if rows.is_empty() {
        Vec::new()
    } else {
        rows.remove(0)
    };
    Table {
        header,
        rows: rows.into_iter().map(|cells| TableRow { cells }).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_token_counts_match_counting_the_text() {
        let table = table_from_rows(vec![
            vec!["Region".into(), "Q1 total".into(), "Date".into()],
            vec!["North".into(), "10.5".into(), "2024-01-15".into()],
            vec![
                "South, east".into(),
                "".into(),
                "pipes | here\nand\r\nthere".into(),
            ],
            vec!["North".into(), "  10.5 ".into(), "x".into(), "wider".into()],
            vec!["'s".into(), "-42".into(), "   ".into()],
        ]);
        let mut text = String::new();
        render_table(&mut text, &table);
        assert_eq!(md_cell("a|b\nc "), "a\\|b c");
        for tail in ["", "\n", "\n[5 rows × 4 columns in total; note]"] {
            let text = format!("{}{tail}", text.trim_end());
            assert_eq!(
                tokens::count_sheet(&text, &table),
                tokens::count(&text),
                "{text}"
            );
        }
        // Not the table's rendering (cut by the size cap): counted as text.
        let cut = format!("{}\n\n[… truncated]", &text[..40]);
        assert_eq!(tokens::count_sheet(&cut, &table), tokens::count(&cut));
    }
}
