//! ODT (OpenDocument text): `content.xml` read as events into the same blocks as DOCX
//! (headings, paragraphs, list items, tables; text frames and notes as paragraphs of
//! their own), split into sections at the top-level headings.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::{ExtractError, Result};
use crate::extract::docx::{Block, sections};
use crate::extract::{Limits, push_entity, table_from_rows, zipsafe};
use crate::types::ExtractedPart;

const WHAT: &str = "OpenDocument text";

pub fn extract(data: &[u8], limits: &Limits) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let entries = zipsafe::read_entries(data, WHAT, limits, |n| n == "content.xml")?;
    let xml = entries
        .get("content.xml")
        .ok_or_else(|| ExtractError::invalid("the OpenDocument file has no content.xml"))?;
    let blocks = parse(&String::from_utf8_lossy(xml), limits)?;
    Ok((sections(blocks), Vec::new()))
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .map(|a| a.value.into_owned())
}

/// A paragraph being read: heading level, list depth, text.
struct Para {
    heading: Option<u8>,
    list: Option<u32>,
    text: String,
}

#[derive(Default)]
struct TableBuild {
    rows: Vec<Vec<String>>,
    cell: Option<String>,
}

fn parse(xml: &str, limits: &Limits) -> Result<Vec<Block>> {
    let mut reader = Reader::from_str(xml);
    let mut blocks = Vec::new();
    let mut paras: Vec<Para> = Vec::new();
    let mut tables: Vec<TableBuild> = Vec::new();
    let mut list_depth = 0u32;
    let mut in_body = false;
    let mut events = 0u32;
    loop {
        events = events.wrapping_add(1);
        if events.is_multiple_of(4096) {
            limits.check_time()?;
        }
        let ev = reader
            .read_event()
            .map_err(|e| ExtractError::invalid(format!("the {WHAT}'s XML is malformed: {e}")))?;
        match ev {
            Event::Start(e) => match e.local_name().as_ref() {
                "body" => in_body = true,
                "list" => list_depth += 1,
                "h" | "p" if in_body => {
                    let heading = (e.local_name().as_ref() == "h").then(|| {
                        attr(&e, "text:outline-level")
                            .and_then(|l| l.parse::<u8>().ok())
                            .unwrap_or(1)
                            .clamp(1, 9)
                    });
                    paras.push(Para {
                        heading,
                        list: (list_depth > 0).then(|| list_depth - 1),
                        text: String::new(),
                    });
                }
                "table" => tables.push(TableBuild::default()),
                "table-row" => {
                    if let Some(t) = tables.last_mut() {
                        t.rows.push(Vec::new());
                    }
                }
                "table-cell" => {
                    if let Some(t) = tables.last_mut() {
                        t.cell = Some(String::new());
                    }
                }
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                "s" => {
                    let n = attr(&e, "text:c")
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1usize);
                    if let Some(p) = paras.last_mut() {
                        p.text.extend(std::iter::repeat_n(' ', n.min(64)));
                    }
                }
                "tab" => {
                    if let Some(p) = paras.last_mut() {
                        p.text.push('\t');
                    }
                }
                "line-break" => {
                    if let Some(p) = paras.last_mut() {
                        p.text.push('\n');
                    }
                }
                "table-cell" => {
                    if let Some(row) = tables.last_mut().and_then(|t| t.rows.last_mut()) {
                        row.push(String::new());
                    }
                }
                _ => {}
            },
            Event::Text(t) => {
                if let Some(p) = paras.last_mut() {
                    p.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(p) = paras.last_mut() {
                    push_entity(&mut p.text, &r);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "body" => in_body = false,
                "list" => list_depth = list_depth.saturating_sub(1),
                "h" | "p" => {
                    let Some(p) = paras.pop() else { continue };
                    let text = p.text.trim().to_owned();
                    if text.is_empty() {
                        continue;
                    }
                    if let Some(cell) = tables.last_mut().and_then(|t| t.cell.as_mut()) {
                        if !cell.is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(&text);
                        continue;
                    }
                    blocks.push(match (p.heading, p.list) {
                        (Some(level), _) => Block::Heading(level, text),
                        (None, Some(level)) => Block::ListItem(level, "-".into(), text),
                        (None, None) => Block::Paragraph(text),
                    });
                }
                "table-cell" => {
                    if let Some(t) = tables.last_mut()
                        && let Some(cell) = t.cell.take()
                        && let Some(row) = t.rows.last_mut()
                    {
                        row.push(cell);
                    }
                }
                "table" => {
                    if let Some(mut t) = tables.pop() {
                        // Trailing empty cells and rows are padding, not content.
                        for row in &mut t.rows {
                            while row.last().is_some_and(|c| c.is_empty()) {
                                row.pop();
                            }
                        }
                        t.rows.retain(|r| !r.is_empty());
                        let table = table_from_rows(t.rows);
                        match tables.last_mut().and_then(|p| p.cell.as_mut()) {
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
                            None if !table.header.is_empty() => blocks.push(Block::Table(table)),
                            None => {}
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
