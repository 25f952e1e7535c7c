//! PPTX: one part per slide, in presentation order (`ppt/presentation.xml` → its
//! relationships), each with its title as a heading, the text of every shape, its tables
//! (as Markdown and as structure) and the speaker notes. XML is read as events; entries
//! go through the shared inflate budget.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::{ExtractError, Result};
use crate::extract::{Limits, part, push_entity, render_table, table_from_rows, zipsafe};
use crate::types::{ExtractedPart, PartKind, Table};

const WHAT: &str = "PowerPoint presentation";

pub fn extract(data: &[u8], limits: &Limits) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let mut archive = zipsafe::Archive::open(data, WHAT, limits)?;
    let names = archive.names();
    let slides = slide_order(&mut archive, &names)?;
    if slides.is_empty() {
        return Err(ExtractError::invalid(
            "the PowerPoint presentation has no slides",
        ));
    }
    let mut parts = Vec::with_capacity(slides.len());
    let mut warnings = Vec::new();
    for (i, path) in slides.iter().enumerate() {
        limits.check_time()?;
        let Some(xml) = archive.read(path)? else {
            warnings.push(format!("slide {} is missing from the file", i + 1));
            continue;
        };
        let slide = parse(&String::from_utf8_lossy(&xml), limits)?;
        let notes = match notes_path(&mut archive, path)? {
            Some(n) => match archive.read(&n)? {
                Some(x) => Some(parse(&String::from_utf8_lossy(&x), limits)?),
                None => None,
            },
            None => None,
        };
        let mut text = String::new();
        if let Some(t) = &slide.title {
            text.push_str("# ");
            text.push_str(t);
        }
        let mut tables = Vec::new();
        for item in slide.items {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            match item {
                Item::Para(p) => text.push_str(&p),
                Item::Table(t) => {
                    render_table(&mut text, &t);
                    tables.push(t);
                }
            }
        }
        if let Some(notes) = notes {
            let body: Vec<String> = notes
                .items
                .into_iter()
                .filter_map(|i| match i {
                    Item::Para(p) => Some(p),
                    Item::Table(_) => None,
                })
                .collect();
            if !body.is_empty() {
                text.push_str("\n\nNotes: ");
                text.push_str(&body.join("\n"));
            }
        }
        let mut p = part(
            PartKind::Slide,
            format!("Slide {}", i + 1),
            text.trim().to_owned(),
        );
        p.tables = tables;
        parts.push(p);
    }
    Ok((parts, warnings))
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name).ok().flatten().map(|a| {
        quick_xml::escape::unescape(&a.value)
            .map(|v| v.into_owned())
            .unwrap_or_else(|_| a.value.into_owned())
    })
}

fn xml_err(e: impl std::fmt::Display) -> ExtractError {
    ExtractError::invalid(format!(
        "the PowerPoint presentation's XML is malformed: {e}"
    ))
}

/// Relationship id → target, resolved against the folder of the part that owns them.
fn relationships(xml: &[u8], base: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let xml = String::from_utf8_lossy(xml);
    let mut reader = Reader::from_str(&xml);
    while let Ok(ev) = reader.read_event() {
        match ev {
            Event::Empty(e) | Event::Start(e) if e.local_name().as_ref() == "Relationship" => {
                if let (Some(id), Some(target)) = (attr(&e, "Id"), attr(&e, "Target")) {
                    out.insert(id, resolve(base, &target));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

/// `base` is a folder ("ppt/slides"); `target` relative to it ("../notesSlides/n1.xml")
/// or absolute ("/ppt/slides/slide1.xml").
fn resolve(base: &str, target: &str) -> String {
    let mut stack: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|s| !s.is_empty()).collect()
    };
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            s => stack.push(s),
        }
    }
    stack.join("/")
}

/// Slides in the order the presentation lists them; by number when it lists none.
fn slide_order(archive: &mut zipsafe::Archive<'_>, names: &[String]) -> Result<Vec<String>> {
    let mut order = Vec::new();
    if let (Some(pres), Some(rels)) = (
        archive.read("ppt/presentation.xml")?,
        archive.read("ppt/_rels/presentation.xml.rels")?,
    ) {
        let rels = relationships(&rels, "ppt");
        let pres = String::from_utf8_lossy(&pres);
        let mut reader = Reader::from_str(&pres);
        loop {
            match reader.read_event().map_err(xml_err)? {
                Event::Empty(e) | Event::Start(e) if e.local_name().as_ref() == "sldId" => {
                    if let Some(path) = attr(&e, "r:id").and_then(|id| rels.get(&id))
                        && names.contains(path)
                        && !order.contains(path)
                    {
                        order.push(path.clone());
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
    }
    if order.is_empty() {
        let mut numbered: Vec<(u32, String)> = names
            .iter()
            .filter_map(|n| {
                let num = n.strip_prefix("ppt/slides/slide")?.strip_suffix(".xml")?;
                Some((num.parse().ok()?, n.clone()))
            })
            .collect();
        numbered.sort();
        order = numbered.into_iter().map(|(_, n)| n).collect();
    }
    Ok(order)
}

/// The notes slide of `slide`, from the slide's relationships.
fn notes_path(archive: &mut zipsafe::Archive<'_>, slide: &str) -> Result<Option<String>> {
    let (dir, file) = slide.rsplit_once('/').unwrap_or(("", slide));
    let Some(rels) = archive.read(&format!("{dir}/_rels/{file}.rels"))? else {
        return Ok(None);
    };
    let xml = String::from_utf8_lossy(&rels);
    let mut reader = Reader::from_str(&xml);
    loop {
        match reader.read_event().map_err(xml_err)? {
            Event::Empty(e) | Event::Start(e) if e.local_name().as_ref() == "Relationship" => {
                if attr(&e, "Type").is_some_and(|t| t.ends_with("/notesSlide"))
                    && let Some(target) = attr(&e, "Target")
                {
                    return Ok(Some(resolve(dir, &target)));
                }
            }
            Event::Eof => return Ok(None),
            _ => {}
        }
    }
}

enum Item {
    Para(String),
    Table(Table),
}

#[derive(Default)]
struct Slide {
    title: Option<String>,
    items: Vec<Item>,
}

/// Placeholders whose text is furniture, not content (slide numbers, dates, footers).
fn furniture(kind: &str) -> bool {
    matches!(kind, "sldNum" | "dt" | "ftr" | "hdr" | "sldImg")
}

fn parse(xml: &str, limits: &Limits) -> Result<Slide> {
    let mut reader = Reader::from_str(xml);
    let mut slide = Slide::default();
    // Per shape: its placeholder kind; paragraphs collected until the shape ends.
    let mut shape_kind: Option<String> = None;
    let mut shape_paras: Vec<String> = Vec::new();
    let mut para: Option<String> = None;
    let mut in_text = false;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut cell: Option<String> = None;
    let mut table_depth = 0usize;
    let mut skip_depth = 0usize;
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
                "sp" => {
                    shape_kind = None;
                    shape_paras.clear();
                }
                "Fallback" => skip_depth = 1,
                "p" => para = Some(String::new()),
                "t" => in_text = true,
                "tbl" => {
                    table_depth += 1;
                    if table_depth == 1 {
                        rows.clear();
                    }
                }
                "tr" if table_depth == 1 => rows.push(Vec::new()),
                "tc" if table_depth == 1 => cell = Some(String::new()),
                "ph" => shape_kind = Some(attr(&e, "type").unwrap_or_else(|| "body".into())),
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                "ph" => shape_kind = Some(attr(&e, "type").unwrap_or_else(|| "body".into())),
                "br" => {
                    if let Some(p) = para.as_mut() {
                        p.push('\n');
                    }
                }
                "tab" => {
                    if let Some(p) = para.as_mut() {
                        p.push('\t');
                    }
                }
                _ => {}
            },
            Event::Text(t) if in_text => {
                if let Some(p) = para.as_mut() {
                    p.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) if in_text => {
                if let Some(p) = para.as_mut() {
                    push_entity(p, &r);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "p" => {
                    let text = para.take().unwrap_or_default();
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    if let Some(c) = cell.as_mut() {
                        if !c.is_empty() {
                            c.push(' ');
                        }
                        c.push_str(text);
                    } else {
                        shape_paras.push(text.to_owned());
                    }
                }
                "tc" if table_depth == 1 => {
                    if let (Some(c), Some(row)) = (cell.take(), rows.last_mut()) {
                        row.push(c);
                    }
                }
                "tbl" => {
                    table_depth = table_depth.saturating_sub(1);
                    if table_depth == 0 {
                        slide
                            .items
                            .push(Item::Table(table_from_rows(std::mem::take(&mut rows))));
                    }
                }
                "sp" | "txBody" if !shape_paras.is_empty() => {
                    let kind = shape_kind.as_deref().unwrap_or("");
                    let paras = std::mem::take(&mut shape_paras);
                    if furniture(kind) {
                        continue;
                    }
                    if matches!(kind, "title" | "ctrTitle") && slide.title.is_none() {
                        slide.title = Some(paras.join(" "));
                    } else {
                        slide.items.extend(paras.into_iter().map(Item::Para));
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(slide)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_their_folder() {
        assert_eq!(
            resolve("ppt/slides", "../notesSlides/notesSlide2.xml"),
            "ppt/notesSlides/notesSlide2.xml"
        );
        assert_eq!(resolve("ppt", "slides/slide1.xml"), "ppt/slides/slide1.xml");
        assert_eq!(
            resolve("ppt", "/ppt/slides/slide9.xml"),
            "ppt/slides/slide9.xml"
        );
    }
}
