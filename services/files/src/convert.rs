//! confab-extract's results → this service's protobuf messages (field for field).

use base64::Engine;
use confab_extract::types as ex;
use confab_proto::files::v1 as pb;

pub fn file_kind(k: ex::FileKind) -> pb::FileKind {
    match k {
        ex::FileKind::Pdf => pb::FileKind::Pdf,
        ex::FileKind::Docx => pb::FileKind::Docx,
        ex::FileKind::Xlsx => pb::FileKind::Xlsx,
        ex::FileKind::Csv => pb::FileKind::Csv,
        ex::FileKind::Text => pb::FileKind::Text,
        ex::FileKind::Image => pb::FileKind::Image,
    }
}

pub fn part_kind(k: ex::PartKind) -> pb::PartKind {
    match k {
        ex::PartKind::Page => pb::PartKind::Page,
        ex::PartKind::Sheet => pb::PartKind::Sheet,
        ex::PartKind::Section => pb::PartKind::Section,
        ex::PartKind::Text => pb::PartKind::Text,
    }
}

pub fn table(t: ex::Table) -> pb::Table {
    pb::Table {
        header: t.header,
        rows: t
            .rows
            .into_iter()
            .map(|r| pb::TableRow { cells: r.cells })
            .collect(),
    }
}

pub fn sheet(s: ex::SheetSummary) -> pb::SheetSummary {
    pb::SheetSummary {
        total_rows: s.total_rows,
        total_columns: s.total_columns,
        rows_included: s.rows_included,
        omitted_note: s.omitted_note,
    }
}

pub fn part(p: ex::ExtractedPart) -> pb::ExtractedPart {
    pb::ExtractedPart {
        kind: part_kind(p.kind) as i32,
        index: p.index,
        label: p.label,
        text: p.text,
        token_count: p.token_count,
        tables: p.tables.into_iter().map(table).collect(),
        sheet: p.sheet.map(sheet),
    }
}

pub fn image_info(i: ex::ImageInfo) -> pb::ImageInfo {
    pb::ImageInfo {
        width: i.width,
        height: i.height,
        format: i.format,
    }
}

pub fn thumbnail(t: ex::Thumbnail) -> pb::Thumbnail {
    pb::Thumbnail {
        mime_type: t.mime_type,
        data: t.data,
        width: t.width,
        height: t.height,
    }
}

/// A data URL for a vision model.
pub fn prompt_image(i: ex::PromptImage<'_>) -> pb::ImagePromptPart {
    let b64 = base64::engine::general_purpose::STANDARD;
    pb::ImagePromptPart {
        data_url: format!("data:{};base64,{}", i.mime_type, b64.encode(&i.data)),
        width: i.width,
        height: i.height,
    }
}
