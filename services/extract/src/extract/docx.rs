//! DOCX: word/document.xml read as a stream of XML events (no DOM, no recursion):
//! headings, paragraphs, lists and tables become Markdown; sections split at the
//! top-level headings.

use std::collections::HashMap;

use crate::types::{ExtractedPart, PartKind, Table};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::{ExtractError, Result};
use crate::extract::{Limits, part, push_entity, render_table, table_from_rows, zipsafe};

const WHAT: &str = "Word document";

pub fn extract(data: &[u8], limits: &Limits) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let entries = zipsafe::read_entries(data, WHAT, limits, |n| {
        n == "word/document.xml" || n == "word/styles.xml"
    })?;
    let doc = entries
        .get("word/document.xml")
        .ok_or_else(|| ExtractError::invalid("the Word document has no word/document.xml"))?;
    let styles = entries
        .get("word/styles.xml")
        .map(|s| heading_styles(s))
        .unwrap_or_default();
    let doc = std::str::from_utf8(doc)
        .map_err(|_| ExtractError::invalid("the Word document's XML is not valid UTF-8"))?;
    let blocks = parse_document(doc, &styles, limits)?;
    Ok((sections(blocks), Vec::new()))
}

#[derive(Debug)]
enum Block {
    Heading(u8, String),
    Paragraph(String),
    ListItem(u32, String),
    Table(Table),
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .map(|a| a.value.into_owned())
}

fn xml_err(e: impl std::fmt::Display) -> ExtractError {
    ExtractError::invalid(format!("the Word document's XML is malformed: {e}"))
}

/// styleId → heading level, from the style names ("heading 2", "Title").
fn heading_styles(xml: &[u8]) -> HashMap<String, u8> {
    let mut map = HashMap::new();
    let Ok(xml) = std::str::from_utf8(xml) else {
        return map;
    };
    let mut reader = Reader::from_str(xml);
    let mut current: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.local_name().as_ref() {
                "style" => current = attr(&e, "w:styleId"),
                "name" => {
                    if let (Some(id), Some(name)) = (&current, attr(&e, "w:val"))
                        && let Some(level) = level_from_name(&name)
                    {
                        map.insert(id.clone(), level);
                    }
                }
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    map
}

fn level_from_name(name: &str) -> Option<u8> {
    let lower = name.to_ascii_lowercase().replace(' ', "");
    if lower == "title" {
        return Some(1);
    }
    let rest = lower.strip_prefix("heading")?;
    rest.parse::<u8>().ok().filter(|l| (1..=9).contains(l))
}

#[derive(Default)]
struct Para {
    text: String,
    heading: Option<u8>,
    list: Option<u32>,
}

#[derive(Default)]
struct TableBuild {
    rows: Vec<Vec<String>>,
    row: Option<Vec<String>>,
    cell: Option<String>,
}

fn parse_document(xml: &str, styles: &HashMap<String, u8>, limits: &Limits) -> Result<Vec<Block>> {
    let mut reader = Reader::from_str(xml);
    let mut blocks = Vec::new();
    let mut para: Option<Para> = None;
    let mut tables: Vec<TableBuild> = Vec::new();
    let mut in_text = false;
    let mut in_ppr = false;
    let mut skip_depth = 0usize; // inside mc:Fallback (duplicate content)
    let mut events = 0u32;
    loop {
        events = events.wrapping_add(1);
        if events.is_multiple_of(4096) {
            limits.check_time()?;
        }
        let ev = reader.read_event().map_err(xml_err)?;
        if skip_depth > 0 {
            match ev {
                Event::Start(_) => skip_depth += 1,
                Event::End(_) => skip_depth -= 1,
                Event::Eof => break,
                _ => {}
            }
            continue;
        }
        match ev {
            Event::Start(e) => match e.local_name().as_ref() {
                "p" => para = Some(Para::default()),
                "pPr" => in_ppr = true,
                "t" => in_text = true,
                "Fallback" => skip_depth = 1,
                "tbl" => tables.push(TableBuild::default()),
                "tr" => {
                    if let Some(t) = tables.last_mut() {
                        t.row = Some(Vec::new());
                    }
                }
                "tc" => {
                    if let Some(t) = tables.last_mut() {
                        t.cell = Some(String::new());
                    }
                }
                "numPr" => {
                    if let Some(p) = para.as_mut() {
                        p.list.get_or_insert(0);
                    }
                }
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                "pStyle" => {
                    if let (Some(p), Some(id)) = (para.as_mut(), attr(&e, "w:val")) {
                        p.heading = styles.get(&id).copied().or_else(|| level_from_name(&id));
                    }
                }
                "outlineLvl" if in_ppr => {
                    if let (Some(p), Some(v)) = (para.as_mut(), attr(&e, "w:val"))
                        && let Ok(l) = v.parse::<u8>()
                        && l < 9
                    {
                        p.heading.get_or_insert(l + 1);
                    }
                }
                "ilvl" if in_ppr => {
                    if let (Some(p), Some(v)) = (para.as_mut(), attr(&e, "w:val")) {
                        p.list = Some(v.parse().unwrap_or(0).min(8));
                    }
                }
                "tab" if !in_ppr => {
                    if let Some(p) = para.as_mut() {
                        p.text.push('\t');
                    }
                }
                "br" | "cr" => {
                    if let Some(p) = para.as_mut() {
                        p.text.push('\n');
                    }
                }
                _ => {}
            },
            Event::Text(t) if in_text => {
                if let Some(p) = para.as_mut() {
                    p.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) if in_text => {
                if let Some(p) = para.as_mut() {
                    push_entity(&mut p.text, &r);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "pPr" => in_ppr = false,
                "p" => {
                    if let Some(p) = para.take() {
                        finish_para(p, &mut tables, &mut blocks);
                    }
                }
                "tc" => {
                    if let Some(t) = tables.last_mut()
                        && let Some(cell) = t.cell.take()
                    {
                        t.row.get_or_insert_with(Vec::new).push(cell);
                    }
                }
                "tr" => {
                    if let Some(t) = tables.last_mut()
                        && let Some(row) = t.row.take()
                    {
                        t.rows.push(row);
                    }
                }
                "tbl" => {
                    if let Some(t) = tables.pop() {
                        let table = table_from_rows(t.rows);
                        match tables.last_mut().and_then(|p| p.cell.as_mut()) {
                            // A nested table flattens into its parent cell.
                            Some(cell) => {
                                for r in std::iter::once(&table.header)
                                    .chain(table.rows.iter().map(|r| &r.cells))
                                {
                                    if !cell.is_empty() {
                                        cell.push(' ');
                                    }
                                    cell.push_str(&r.join(" "));
                                }
                            }
                            None => blocks.push(Block::Table(table)),
                        }
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(blocks)
}

fn finish_para(p: Para, tables: &mut [TableBuild], blocks: &mut Vec<Block>) {
    if let Some(cell) = tables.last_mut().and_then(|t| t.cell.as_mut()) {
        let text = p.text.trim();
        if !text.is_empty() {
            if !cell.is_empty() {
                cell.push(' ');
            }
            cell.push_str(text);
        }
        return;
    }
    let text = p.text.trim().to_owned();
    if text.is_empty() {
        return;
    }
    blocks.push(match (p.heading, p.list) {
        (Some(level), _) => Block::Heading(level, text),
        (None, Some(level)) => Block::ListItem(level, text),
        (None, None) => Block::Paragraph(text),
    });
}

/// Groups blocks into sections at the top-most heading level used.
fn sections(blocks: Vec<Block>) -> Vec<ExtractedPart> {
    let top = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Heading(l, _) => Some(*l),
            _ => None,
        })
        .min();
    let mut parts = Vec::new();
    let mut label = String::from("Document");
    let mut text = String::new();
    let mut tables = Vec::new();
    let mut prev_list = false;
    let flush = |label: &str,
                 text: &mut String,
                 tables: &mut Vec<Table>,
                 parts: &mut Vec<ExtractedPart>| {
        if !text.trim().is_empty() || !tables.is_empty() {
            let mut p = part(
                PartKind::Section,
                label,
                std::mem::take(text).trim_end().to_owned(),
            );
            p.tables = std::mem::take(tables);
            parts.push(p);
        }
    };
    for block in blocks {
        if let Block::Heading(level, ref title) = block
            && Some(level) == top
        {
            flush(&label, &mut text, &mut tables, &mut parts);
            label = title.clone();
        }
        let is_list = matches!(block, Block::ListItem(..));
        if !text.is_empty() {
            text.push_str(if is_list && prev_list { "\n" } else { "\n\n" });
        }
        prev_list = is_list;
        match block {
            Block::Heading(level, t) => {
                text.push_str(&"#".repeat(level as usize));
                text.push(' ');
                text.push_str(&t);
            }
            Block::Paragraph(t) => text.push_str(&t),
            Block::ListItem(level, t) => {
                text.push_str(&"  ".repeat(level as usize));
                text.push_str("- ");
                text.push_str(&t);
            }
            Block::Table(t) => {
                render_table(&mut text, &t);
                tables.push(t);
            }
        }
    }
    flush(&label, &mut text, &mut tables, &mut parts);
    if parts.is_empty() {
        parts.push(part(PartKind::Section, "Document", String::new()));
    }
    parts
}
