//! What extraction produces. Plain data; confab-files maps it onto its protobuf messages
//! (field for field).

/// The kind of file extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Pdf,
    Docx,
    Xlsx,
    Csv,
    Text,
    Image,
}

/// What one extracted part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartKind {
    Page,
    Sheet,
    Section,
    Text,
}

/// A table: a header row and data rows (rows may be narrower or wider than the header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<TableRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRow {
    pub cells: Vec<String>,
}

/// What a summarised sheet left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SheetSummary {
    pub total_rows: u32,
    pub total_columns: u32,
    pub rows_included: u32,
    pub omitted_note: String,
}

/// One page, sheet or section, with its text (Markdown) and structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedPart {
    pub kind: PartKind,
    /// 1-based position in the file.
    pub index: u32,
    pub label: String,
    pub text: String,
    /// cl100k tokens of `text`.
    pub token_count: u32,
    pub tables: Vec<Table>,
    pub sheet: Option<SheetSummary>,
}

/// An image's dimensions and format name ("png", "jpeg", "webp", "gif").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    pub width: u32,
    pub height: u32,
    pub format: String,
}

/// An encoded thumbnail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Thumbnail {
    pub mime_type: String,
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// An image ready for a vision model: `data` encoded as `mime_type` (the original bytes
/// when they were small enough, else a downscaled re-encode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptImage<'a> {
    pub mime_type: String,
    pub data: std::borrow::Cow<'a, [u8]>,
    pub width: u32,
    pub height: u32,
}
