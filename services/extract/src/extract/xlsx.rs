//! XLSX read straight from its XML parts as a stream of events: the workbook (sheet
//! names and order), shared strings, the cell formats that make a number a date, then
//! each worksheet on its own thread. Nothing is re-packed or held as a DOM, and a sparse
//! sheet cannot make us allocate its declared grid (cells go to `sheet::Grid`).

use std::collections::HashMap;
use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::{ExtractError, Result};
use crate::extract::sheet::Grid;
use crate::extract::zipsafe::Archive;
use crate::extract::{Limits, push_entity};
use crate::types::ExtractedPart;

const WHAT: &str = "Excel workbook";
/// Distinct shared strings accepted (each costs an index entry even when empty).
const MAX_SHARED_STRINGS: usize = 4_000_000;

pub fn extract(data: &[u8], limits: &Limits) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let mut archive = Archive::open(data, WHAT, limits)?;
    let workbook = archive
        .read("xl/workbook.xml")?
        .ok_or_else(|| ExtractError::invalid("the Excel workbook has no xl/workbook.xml"))?;
    let rels = archive
        .read("xl/_rels/workbook.xml.rels")?
        .unwrap_or_default();
    let (sheets, date1904) = parse_workbook(utf8(&workbook, "xl/workbook.xml")?, &rels)?;
    drop(workbook);
    if sheets.is_empty() {
        return Err(ExtractError::invalid("the Excel workbook has no sheets"));
    }
    let strings = match archive.read("xl/sharedStrings.xml")? {
        Some(x) => SharedStrings::parse(utf8(&x, "xl/sharedStrings.xml")?, limits)?,
        None => SharedStrings::default(),
    };
    let formats = match archive.read("xl/styles.xml")? {
        Some(x) => CellFormats::parse(&String::from_utf8_lossy(&x)),
        None => CellFormats::default(),
    };
    let book = Book {
        strings,
        formats,
        date1904,
    };
    // Each sheet is inflated and parsed on its own thread (one shared inflate budget).
    let results: Vec<Result<Outcome>> = {
        use rayon::prelude::*;
        sheets
            .par_iter()
            .map(|sheet| read_sheet(archive.clone(), sheet, &book, limits))
            .collect()
    };
    let mut parts = Vec::with_capacity(sheets.len());
    let mut warnings = Vec::new();
    for r in results {
        match r? {
            Outcome::Part(p) => parts.push(*p),
            Outcome::Skipped(w) => warnings.push(w),
        }
    }
    Ok((parts, warnings))
}

fn utf8<'b>(bytes: &'b [u8], entry: &str) -> Result<&'b str> {
    std::str::from_utf8(bytes).map_err(|_| {
        ExtractError::invalid(format!("the {WHAT} is corrupt: {entry} is not valid UTF-8"))
    })
}

fn xml_err(entry: &str) -> impl Fn(quick_xml::Error) -> ExtractError + '_ {
    move |e| ExtractError::invalid(format!("the {WHAT} is corrupt: {entry}: {e}"))
}

fn attr<'e>(e: &'e BytesStart<'_>, name: &str) -> Option<std::borrow::Cow<'e, str>> {
    e.try_get_attribute(name).ok().flatten().map(|a| a.value)
}

struct SheetRef {
    name: String,
    /// Archive path of the worksheet part; None for a chart sheet or a dangling id.
    path: Option<String>,
}

/// Sheet names in workbook order with their parts, and whether dates count from 1904.
fn parse_workbook(xml: &str, rels: &[u8]) -> Result<(Vec<SheetRef>, bool)> {
    // rId → worksheet part (other relationship types, e.g. chart sheets, are not kept).
    let mut targets = HashMap::new();
    let rels = String::from_utf8_lossy(rels);
    let mut reader = Reader::from_str(&rels);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e))
                if e.local_name().as_ref() == "Relationship" =>
            {
                let is_sheet = attr(&e, "Type").is_some_and(|t| t.ends_with("/worksheet"));
                if let (true, Some(id), Some(target)) =
                    (is_sheet, attr(&e, "Id"), attr(&e, "Target"))
                {
                    targets.insert(id.into_owned(), part_path(&target));
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    let mut sheets = Vec::new();
    let mut date1904 = false;
    let mut reader = Reader::from_str(xml);
    loop {
        match reader.read_event().map_err(xml_err("xl/workbook.xml"))? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "workbookPr" => {
                    date1904 = attr(&e, "date1904").is_some_and(|v| v == "1" || v == "true");
                }
                "sheet" => {
                    let name = attr(&e, "name")
                        .map(|n| unescape_attr(&n))
                        .unwrap_or_default();
                    let id = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == "id")
                        .map(|a| a.value.into_owned());
                    let path = id.and_then(|id| targets.get(&id).cloned());
                    sheets.push(SheetRef { name, path });
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((sheets, date1904))
}

/// A relationship target as an archive path ("worksheets/sheet1.xml" is under xl/).
fn part_path(target: &str) -> String {
    match target.strip_prefix('/') {
        Some(abs) => abs.to_owned(),
        None => {
            let mut parts: Vec<&str> = vec!["xl"];
            for seg in target.split('/') {
                match seg {
                    ".." => {
                        parts.pop();
                    }
                    "." | "" => {}
                    s => parts.push(s),
                }
            }
            parts.join("/")
        }
    }
}

/// An attribute value with XML escapes resolved (sheet names like "R&amp;D").
fn unescape_attr(raw: &str) -> String {
    quick_xml::escape::unescape(raw)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| raw.to_owned())
}

/// The workbook's string table: one buffer and an index, so a million short strings do
/// not cost a million allocations.
#[derive(Default)]
struct SharedStrings {
    text: String,
    ends: Vec<u32>,
}

impl SharedStrings {
    fn parse(xml: &str, limits: &Limits) -> Result<Self> {
        let mut out = Self::default();
        let mut reader = Reader::from_str(xml);
        let mut rich = RichText::default();
        let mut n = 0u32;
        loop {
            n = n.wrapping_add(1);
            if n.is_multiple_of(8192) {
                limits.check_time()?;
            }
            let ev = reader
                .read_event()
                .map_err(xml_err("xl/sharedStrings.xml"))?;
            match ev {
                Event::Start(ref e) if e.local_name().as_ref() == "si" => {
                    rich.start(out.text.len());
                }
                Event::End(ref e) if e.local_name().as_ref() == "si" => {
                    rich.finish(&mut out.text);
                    if out.ends.len() >= MAX_SHARED_STRINGS {
                        return Err(ExtractError::invalid(format!(
                            "the {WHAT} has more than {MAX_SHARED_STRINGS} distinct strings; it was not processed"
                        )));
                    }
                    let end = u32::try_from(out.text.len()).map_err(|_| {
                        ExtractError::invalid(format!("the {WHAT}'s string table is too large"))
                    })?;
                    out.ends.push(end);
                }
                // `<si/>`: an empty string still takes its index.
                Event::Empty(ref e) if e.local_name().as_ref() == "si" => {
                    out.ends
                        .push(u32::try_from(out.text.len()).unwrap_or(u32::MAX));
                }
                Event::Eof => break,
                ev => rich.event(&ev, &mut out.text),
            }
        }
        Ok(out)
    }

    fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..end)
    }
}

/// Text of a rich string (`<si>` or an inline `<is>`): the `<t>` runs, without the
/// phonetic guides (`<rPh>`) that would repeat the text in kana.
#[derive(Default)]
struct RichText {
    active: bool,
    in_t: bool,
    in_phonetic: bool,
    start: usize,
}

impl RichText {
    /// Starts a string whose text will be appended to a buffer now `at` bytes long.
    fn start(&mut self, at: usize) {
        *self = Self {
            active: true,
            start: at,
            ..Self::default()
        };
    }

    fn event(&mut self, ev: &Event<'_>, out: &mut String) {
        if !self.active {
            return;
        }
        match ev {
            Event::Start(e) => match e.local_name().as_ref() {
                "t" => self.in_t = true,
                "rPh" => self.in_phonetic = true,
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                "t" => self.in_t = false,
                "rPh" => self.in_phonetic = false,
                _ => {}
            },
            Event::Text(t) if self.in_t && !self.in_phonetic => out.push_str(&t.xml10_content()),
            Event::CData(t) if self.in_t && !self.in_phonetic => out.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if self.in_t && !self.in_phonetic => push_entity(out, r),
            _ => {}
        }
    }

    /// Ends the string: OOXML's `_xHHHH_` escapes (control characters) resolved.
    fn finish(&mut self, out: &mut String) {
        self.active = false;
        if out[self.start..].contains("_x") {
            let decoded = decode_ooxml_escapes(&out[self.start..]);
            out.truncate(self.start);
            out.push_str(&decoded);
        }
    }
}

/// `_x000D_` → '\r' (ECMA-376 ST_Xstring); `_x005F_` escapes a literal underscore.
fn decode_ooxml_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("_x") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let code = tail
            .get(2..6)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .filter(|_| tail.as_bytes().get(6) == Some(&b'_'))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32);
        match code {
            Some(c) => {
                out.push(c);
                rest = &tail[7..];
            }
            None => {
                out.push_str("_x");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NumberKind {
    Plain,
    Date,
    Duration,
}

/// For each cell style index (`s="N"`), whether its number format shows a date.
#[derive(Default)]
struct CellFormats {
    kinds: Vec<NumberKind>,
}

impl CellFormats {
    fn parse(xml: &str) -> Self {
        let mut custom: HashMap<u32, NumberKind> = HashMap::new();
        let mut kinds = Vec::new();
        let mut in_cell_xfs = false;
        let mut reader = Reader::from_str(xml);
        loop {
            let ev = match reader.read_event() {
                Ok(Event::Eof) | Err(_) => break,
                Ok(ev) => ev,
            };
            let start = matches!(ev, Event::Start(_));
            match ev {
                Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                    "numFmt" => {
                        if let (Some(id), Some(code)) =
                            (attr(&e, "numFmtId"), attr(&e, "formatCode"))
                            && let Ok(id) = id.parse()
                        {
                            custom.insert(id, format_kind(&unescape_attr(&code)));
                        }
                    }
                    "cellXfs" => in_cell_xfs = start,
                    "xf" if in_cell_xfs => {
                        let id: u32 = attr(&e, "numFmtId")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        kinds.push(custom.get(&id).copied().unwrap_or_else(|| builtin_kind(id)));
                    }
                    _ => {}
                },
                Event::End(e) if e.local_name().as_ref() == "cellXfs" => in_cell_xfs = false,
                _ => {}
            }
        }
        Self { kinds }
    }

    fn kind(&self, style: usize) -> NumberKind {
        self.kinds.get(style).copied().unwrap_or(NumberKind::Plain)
    }
}

/// Built-in number formats (ECMA-376 §18.8.30, with the East Asian date ids).
fn builtin_kind(id: u32) -> NumberKind {
    match id {
        46 => NumberKind::Duration,
        14..=22 | 27..=36 | 45 | 47 | 50..=58 => NumberKind::Date,
        _ => NumberKind::Plain,
    }
}

/// A custom format shows a date when it has date/time letters outside quoted text,
/// escapes and bracketed sections; elapsed-time brackets (`[h]`) make it a duration.
fn format_kind(code: &str) -> NumberKind {
    // Only the first section (positive numbers) decides.
    let mut chars = code.chars();
    let mut date = false;
    while let Some(c) = chars.next() {
        match c {
            ';' => break,
            '"' => {
                for q in chars.by_ref() {
                    if q == '"' {
                        break;
                    }
                }
            }
            '\\' | '_' | '*' => {
                chars.next();
            }
            '[' => {
                let inner: String = chars.by_ref().take_while(|&b| b != ']').collect();
                let inner = inner.to_ascii_lowercase();
                if !inner.is_empty() && inner.chars().all(|c| matches!(c, 'h' | 'm' | 's')) {
                    return NumberKind::Duration;
                }
            }
            'd' | 'D' | 'm' | 'M' | 'y' | 'Y' | 'h' | 'H' | 's' | 'S' => date = true,
            _ => {}
        }
    }
    if date {
        NumberKind::Date
    } else {
        NumberKind::Plain
    }
}

struct Book {
    strings: SharedStrings,
    formats: CellFormats,
    date1904: bool,
}

enum Outcome {
    Part(Box<ExtractedPart>),
    Skipped(String),
}

fn read_sheet(
    mut archive: Archive<'_>,
    sheet: &SheetRef,
    book: &Book,
    limits: &Limits,
) -> Result<Outcome> {
    let name = &sheet.name;
    let Some(path) = &sheet.path else {
        return Ok(Outcome::Skipped(format!(
            "sheet {name:?} is not a worksheet (a chart sheet?) and was not read"
        )));
    };
    let Some(xml) = archive.read(path)? else {
        return Ok(Outcome::Skipped(format!(
            "sheet {name:?} is missing from the workbook ({path})"
        )));
    };
    let mut grid = Grid::new(limits.max_sheet_rows.saturating_add(1));
    parse_sheet(utf8(&xml, path)?, book, limits, &mut grid).map_err(|e| match e {
        ExtractError::Invalid(m) => ExtractError::invalid(format!("{m} (sheet {name:?})")),
        e => e,
    })?;
    Ok(Outcome::Part(Box::new(
        grid.into_part(format!("Sheet {name}"), limits),
    )))
}

/// The cell being read.
#[derive(Default)]
struct CellBuild {
    row: u32,
    col: u32,
    kind: CellType,
    style: usize,
    /// Raw text of `<v>` or of the inline string.
    raw: String,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum CellType {
    #[default]
    Number,
    Shared,
    Inline,
    FormulaText,
    Bool,
    Error,
    IsoDate,
}

fn parse_sheet(xml: &str, book: &Book, limits: &Limits, grid: &mut Grid) -> Result<()> {
    let mut reader = Reader::from_str(xml);
    let mut row: u32 = 0;
    let mut next_row: u32 = 0;
    let mut next_col: u32 = 0;
    let mut cell: Option<CellBuild> = None;
    let mut in_v = false;
    let mut inline = RichText::default();
    let mut shown = String::new();
    let mut n = 0u32;
    loop {
        n = n.wrapping_add(1);
        if n.is_multiple_of(16384) {
            limits.check_time()?;
        }
        let ev = reader.read_event().map_err(xml_err("a worksheet"))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => match e.local_name().as_ref() {
                "row" => {
                    row = attr(e, "r")
                        .and_then(|r| r.trim().parse::<u32>().ok())
                        .filter(|&r| r >= 1)
                        .map_or(next_row, |r| r - 1);
                    next_row = row.saturating_add(1);
                    next_col = 0;
                }
                "c" => {
                    let mut c = CellBuild {
                        row,
                        col: next_col,
                        ..CellBuild::default()
                    };
                    for a in e.attributes().with_checks(false).flatten() {
                        match a.key.as_ref() {
                            "r" => {
                                if let Some((r, col)) = cell_ref(&a.value) {
                                    c.col = col;
                                    if r != u32::MAX {
                                        c.row = r;
                                    }
                                }
                            }
                            "t" => {
                                c.kind = match a.value.as_ref() {
                                    "s" => CellType::Shared,
                                    "inlineStr" => CellType::Inline,
                                    "str" => CellType::FormulaText,
                                    "b" => CellType::Bool,
                                    "e" => CellType::Error,
                                    "d" => CellType::IsoDate,
                                    _ => CellType::Number,
                                }
                            }
                            "s" => c.style = a.value.parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                    next_col = c.col.saturating_add(1);
                    // `<c .../>` has no value: nothing to show.
                    if matches!(ev, Event::Start(_)) {
                        cell = Some(c);
                    }
                }
                "v" if cell.is_some() => in_v = matches!(ev, Event::Start(_)),
                "is" if matches!(ev, Event::Start(_)) => {
                    if let Some(c) = cell.as_mut() {
                        inline.start(c.raw.len());
                    }
                }
                _ => {
                    if let Some(c) = cell.as_mut() {
                        inline.event(&ev, &mut c.raw);
                    }
                }
            },
            Event::End(ref e) => match e.local_name().as_ref() {
                "v" => in_v = false,
                "is" => {
                    if let Some(c) = cell.as_mut() {
                        inline.finish(&mut c.raw);
                    }
                }
                "c" => {
                    if let Some(c) = cell.take() {
                        shown.clear();
                        cell_text(&c, book, &mut shown);
                        grid.put(c.row, c.col, &shown);
                    }
                    in_v = false;
                }
                // Merged ranges, filters, drawings: nothing more to read.
                "sheetData" => break,
                _ => {
                    if let Some(c) = cell.as_mut() {
                        inline.event(&ev, &mut c.raw);
                    }
                }
            },
            Event::Text(ref t) if in_v => {
                if let Some(c) = cell.as_mut() {
                    c.raw.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(ref r) if in_v => {
                if let Some(c) = cell.as_mut() {
                    push_entity(&mut c.raw, r);
                }
            }
            Event::Eof => break,
            ref other => {
                if let Some(c) = cell.as_mut() {
                    inline.event(other, &mut c.raw);
                }
            }
        }
    }
    Ok(())
}

/// "AB12" → (row 11, column 27), zero-based; a reference without a row ("AB") gives
/// `u32::MAX` for the row (the current row is kept).
fn cell_ref(r: &str) -> Option<(u32, u32)> {
    let b = r.as_bytes();
    let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    if letters == 0 || letters > 3 {
        return None;
    }
    let mut col: u32 = 0;
    for &c in &b[..letters] {
        col = col * 26 + u32::from(c.to_ascii_uppercase() - b'A' + 1);
    }
    let digits = &r[letters..];
    let row = if digits.is_empty() {
        u32::MAX
    } else {
        digits.parse::<u32>().ok().filter(|&n| n >= 1)? - 1
    };
    Some((row, col - 1))
}

/// What a cell shows, written to `out`.
fn cell_text(c: &CellBuild, book: &Book, out: &mut String) {
    let raw = c.raw.as_str();
    match c.kind {
        CellType::Shared => {
            if let Some(s) = raw
                .trim()
                .parse::<usize>()
                .ok()
                .and_then(|i| book.strings.get(i))
            {
                out.push_str(s);
            }
        }
        CellType::Inline | CellType::FormulaText | CellType::Error | CellType::IsoDate => {
            out.push_str(raw)
        }
        CellType::Bool => out.push_str(match raw.trim() {
            "1" | "true" | "TRUE" => "TRUE",
            _ => "FALSE",
        }),
        CellType::Number => {
            let Ok(v) = raw.trim().parse::<f64>() else {
                out.push_str(raw);
                return;
            };
            match book.formats.kind(c.style) {
                NumberKind::Date if (0.0..2_958_466.0).contains(&v) => {
                    excel_date(v, book.date1904, out)
                }
                _ => number(v, out),
            }
        }
    }
}

/// A number as Excel shows it with the General format (integers without ".0").
fn number(v: f64, out: &mut String) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// An Excel serial date → "2024-01-15", "2024-01-15 13:30:00", or "13:30:00" for a time
/// of day alone.
fn excel_date(serial: f64, date1904: bool, out: &mut String) {
    let mut days = serial.trunc() as i64;
    let mut secs = ((serial - serial.trunc()) * 86_400.0).round() as i64;
    if secs >= 86_400 {
        days += 1;
        secs -= 86_400;
    }
    if !date1904 && days == 0 {
        // A time without a date.
        let _ = write!(
            out,
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        return;
    }
    // Days since 1970-01-01. The 1900 system counts a 29 February 1900 that never was.
    let unix_days = if date1904 {
        days - 24_107
    } else if days >= 60 {
        days - 25_569
    } else {
        days - 25_568
    };
    let (y, m, d) = civil_from_days(unix_days);
    let _ = write!(out, "{y:04}-{m:02}-{d:02}");
    if secs > 0 {
        let _ = write!(
            out,
            " {:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(v: f64) -> String {
        let mut s = String::new();
        excel_date(v, false, &mut s);
        s
    }

    #[test]
    fn serial_dates_match_excel() {
        assert_eq!(date(1.0), "1900-01-01");
        assert_eq!(date(59.0), "1900-02-28");
        assert_eq!(date(61.0), "1900-03-01");
        assert_eq!(date(45306.0), "2024-01-15");
        assert_eq!(date(45306.5625), "2024-01-15 13:30:00");
        assert_eq!(date(0.75), "18:00:00");
        let mut s = String::new();
        excel_date(0.0, true, &mut s);
        assert_eq!(s, "1904-01-01");
    }

    #[test]
    fn custom_formats_are_classified() {
        assert_eq!(format_kind("yyyy-mm-dd"), NumberKind::Date);
        assert_eq!(format_kind("[$-409]d-mmm-yy;@"), NumberKind::Date);
        assert_eq!(format_kind("[h]:mm:ss"), NumberKind::Duration);
        assert_eq!(format_kind("0.00%"), NumberKind::Plain);
        assert_eq!(format_kind("#,##0 \"days\""), NumberKind::Plain);
        assert_eq!(format_kind("_(* #,##0_);_(* (#,##0)"), NumberKind::Plain);
        assert_eq!(format_kind("[Red]0.00"), NumberKind::Plain);
        assert_eq!(format_kind("General"), NumberKind::Plain);
    }

    #[test]
    fn cell_references() {
        assert_eq!(cell_ref("A1"), Some((0, 0)));
        assert_eq!(cell_ref("AB12"), Some((11, 27)));
        assert_eq!(cell_ref("XFD1048576"), Some((1_048_575, 16_383)));
        assert_eq!(cell_ref("1A"), None);
        assert_eq!(cell_ref("A0"), None);
    }

    #[test]
    fn ooxml_escapes() {
        assert_eq!(decode_ooxml_escapes("a_x000D_b"), "a\rb");
        assert_eq!(decode_ooxml_escapes("_x005F_x000D_"), "_x000D_");
        assert_eq!(decode_ooxml_escapes("my_xvar"), "my_xvar");
    }

    #[test]
    fn relationship_targets() {
        assert_eq!(
            part_path("worksheets/sheet1.xml"),
            "xl/worksheets/sheet1.xml"
        );
        assert_eq!(part_path("/xl/worksheets/s.xml"), "xl/worksheets/s.xml");
        assert_eq!(part_path("../xl/worksheets/s.xml"), "xl/worksheets/s.xml");
    }
}
