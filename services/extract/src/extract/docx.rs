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
        n == "word/document.xml" || n == "word/styles.xml" || n == "word/numbering.xml"
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
    let mut numbering = entries
        .get("word/numbering.xml")
        .map(|n| Numbering::parse(&String::from_utf8_lossy(n)))
        .unwrap_or_default();
    let blocks = parse_document(doc, &styles, &mut numbering, limits)?;
    Ok((sections(blocks), Vec::new()))
}

#[derive(Debug)]
enum Block {
    Heading(u8, String),
    Paragraph(String),
    /// Level, marker ("-", "1.", "a)"), text.
    ListItem(u32, String, String),
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
    /// `w:numId` of a numbered or bulleted paragraph ("0" takes numbering away).
    num_id: Option<String>,
}

/// One level of a list definition: how its number is written.
#[derive(Clone, Default)]
struct ListLevel {
    /// decimal, lowerLetter, upperRoman, bullet, none, ...
    format: String,
    /// "%1." or "(%2)" or "%1.%2.": the level's numbers substituted for %N.
    text: String,
    start: u32,
}

/// word/numbering.xml: list definitions, and the running counters of each list.
#[derive(Default)]
struct Numbering {
    /// numId → abstractNumId.
    nums: HashMap<String, String>,
    /// abstractNumId → levels 0..9.
    abstracts: HashMap<String, Vec<ListLevel>>,
    /// numId → current number per level.
    counters: HashMap<String, [u32; 9]>,
}

impl Numbering {
    fn parse(xml: &str) -> Self {
        let mut out = Self::default();
        let mut reader = Reader::from_str(xml);
        let mut abstract_id: Option<String> = None;
        let mut num_id: Option<String> = None;
        let mut level: Option<usize> = None;
        loop {
            let ev = match reader.read_event() {
                Ok(Event::Eof) | Err(_) => break,
                Ok(ev) => ev,
            };
            match ev {
                Event::Start(ref e) | Event::Empty(ref e) => match e.local_name().as_ref() {
                    "abstractNum" => abstract_id = attr(e, "w:abstractNumId"),
                    "num" => num_id = attr(e, "w:numId"),
                    "abstractNumId" => {
                        if let (Some(n), Some(a)) = (&num_id, attr(e, "w:val")) {
                            out.nums.insert(n.clone(), a);
                        }
                    }
                    "lvl" => {
                        level = attr(e, "w:ilvl")
                            .and_then(|v| v.parse::<usize>().ok())
                            .filter(|&l| l < 9);
                        if let (Some(a), Some(l)) = (&abstract_id, level) {
                            let levels = out.abstracts.entry(a.clone()).or_default();
                            if levels.len() <= l {
                                levels.resize(l + 1, ListLevel::default());
                            }
                            levels[l].start = 1;
                        }
                    }
                    name @ ("start" | "numFmt" | "lvlText") => {
                        if let (Some(a), Some(l), Some(v)) = (&abstract_id, level, attr(e, "w:val"))
                            && let Some(lvl) = out.abstracts.get_mut(a).and_then(|v| v.get_mut(l))
                        {
                            match name {
                                "start" => lvl.start = v.parse().unwrap_or(1),
                                "numFmt" => lvl.format = v,
                                _ => lvl.text = v,
                            }
                        }
                    }
                    _ => {}
                },
                Event::End(ref e) => match e.local_name().as_ref() {
                    "abstractNum" => abstract_id = None,
                    "num" => num_id = None,
                    "lvl" => level = None,
                    _ => {}
                },
                _ => {}
            }
        }
        out
    }

    /// The marker of the next item of list `num_id` at `level` ("3.", "b)", "-"),
    /// counting on from the list's previous items.
    fn next_marker(&mut self, num_id: &str, level: u32) -> String {
        let level = (level as usize).min(8);
        let Some(levels) = self.nums.get(num_id).and_then(|a| self.abstracts.get(a)) else {
            return "-".to_owned();
        };
        static UNDEFINED: ListLevel = ListLevel {
            format: String::new(),
            text: String::new(),
            start: 0,
        };
        let def = |l: usize| levels.get(l).unwrap_or(&UNDEFINED);
        // A level's counter before its first item.
        let reset = |l: usize| def(l).start.max(1) - 1;
        let counters = self
            .counters
            .entry(num_id.to_owned())
            .or_insert_with(|| std::array::from_fn(reset));
        counters[level] += 1;
        // A new item restarts the levels below it.
        for (l, slot) in counters.iter_mut().enumerate().skip(level + 1) {
            *slot = reset(l);
        }
        let this = def(level);
        if matches!(this.format.as_str(), "bullet" | "none" | "") || this.text.is_empty() {
            return "-".to_owned();
        }
        let mut marker = this.text.clone();
        for l in (0..=level).rev() {
            let n = counters[l].max(def(l).start.min(1));
            marker = marker.replace(&format!("%{}", l + 1), &list_number(n, &def(l).format));
        }
        marker
    }
}

/// A list number in a Word number format.
fn list_number(n: u32, format: &str) -> String {
    match format {
        "lowerLetter" => letters(n, b'a'),
        "upperLetter" => letters(n, b'A'),
        "lowerRoman" => roman(n).to_lowercase(),
        "upperRoman" => roman(n),
        _ => n.to_string(),
    }
}

/// 1 → a, 26 → z, 27 → aa (Word repeats the letter).
fn letters(n: u32, base: u8) -> String {
    let n = n.max(1) - 1;
    let c = char::from(base + (n % 26) as u8);
    std::iter::repeat_n(c, (n / 26 + 1).min(10) as usize).collect()
}

fn roman(mut n: u32) -> String {
    if n == 0 || n >= 4000 {
        return n.to_string();
    }
    let mut out = String::new();
    for (v, s) in [
        (1000, "M"),
        (900, "CM"),
        (500, "D"),
        (400, "CD"),
        (100, "C"),
        (90, "XC"),
        (50, "L"),
        (40, "XL"),
        (10, "X"),
        (9, "IX"),
        (5, "V"),
        (4, "IV"),
        (1, "I"),
    ] {
        while n >= v {
            out.push_str(s);
            n -= v;
        }
    }
    out
}

#[derive(Default)]
struct TableBuild {
    rows: Vec<Vec<String>>,
    row: Option<Vec<String>>,
    cell: Option<String>,
}

fn parse_document(
    xml: &str,
    styles: &HashMap<String, u8>,
    numbering: &mut Numbering,
    limits: &Limits,
) -> Result<Vec<Block>> {
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
                "numId" if in_ppr => {
                    if let (Some(p), Some(v)) = (para.as_mut(), attr(&e, "w:val")) {
                        if v == "0" {
                            p.list = None;
                        } else {
                            p.list.get_or_insert(0);
                        }
                        p.num_id = Some(v);
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
                        finish_para(p, &mut tables, &mut blocks, numbering);
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

fn finish_para(
    p: Para,
    tables: &mut [TableBuild],
    blocks: &mut Vec<Block>,
    numbering: &mut Numbering,
) {
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
        (None, Some(level)) => {
            let marker = match &p.num_id {
                Some(id) => numbering.next_marker(id, level),
                None => "-".to_owned(),
            };
            Block::ListItem(level, marker, text)
        }
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
            Block::ListItem(level, marker, t) => {
                text.push_str(&"  ".repeat(level as usize));
                text.push_str(&marker);
                text.push(' ');
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

#[cfg(test)]
mod numbering_tests {
    use super::*;

    #[test]
    fn markers_follow_the_list_definition() {
        let xml = r#"<w:numbering xmlns:w="w">
<w:abstractNum w:abstractNumId="7"><w:lvl w:ilvl="0"><w:start w:val="3"/><w:numFmt w:val="upperRoman"/><w:lvlText w:val="%1."/></w:lvl><w:lvl w:ilvl="1"><w:start w:val="1"/><w:numFmt w:val="decimal"/><w:lvlText w:val="%1.%2"/></w:lvl></w:abstractNum>
<w:num w:numId="4"><w:abstractNumId w:val="7"/></w:num></w:numbering>"#;
        let mut n = Numbering::parse(xml);
        let got: Vec<String> = [(0, 0), (1, 1), (1, 1), (0, 0), (1, 1)]
            .iter()
            .map(|&(_, level)| n.next_marker("4", level))
            .collect();
        assert_eq!(got, ["III.", "III.1", "III.2", "IV.", "IV.1"]);
        // Unknown lists and bullets are dashes.
        assert_eq!(n.next_marker("99", 0), "-");
        assert_eq!(letters(28, b'a'), "bb");
        assert_eq!(roman(1994), "MCMXCIV");
    }
}
