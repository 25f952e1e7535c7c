//! XLSX (calamine, cell by cell so a sparse sheet cannot make us allocate its whole
//! declared grid) and CSV: per sheet, header row + Markdown table; large sheets are
//! summarised (dimensions, header, first rows, a note of what was left out).

use std::collections::BTreeMap;
use std::io::Cursor;

use crate::types::{ExtractedPart, PartKind, SheetSummary};
use calamine::{DataRef, Reader, Xlsx};

use crate::error::{ExtractError, Result};
use crate::extract::{Limits, part, render_table, table_from_rows, zipsafe};

const WHAT: &str = "Excel workbook";
/// Cells kept per row (beyond it the row is cut; the summary says so).
const MAX_CELLS_PER_ROW: u32 = 1024;

/// Rows gathered from a sheet: the first ones in full, the rest only counted.
struct Grid {
    rows: BTreeMap<u32, BTreeMap<u32, String>>,
    keep: usize,
    total_rows: u32,
    min_col: u32,
    max_col: u32,
    seen_rows: std::collections::BTreeSet<u32>,
    /// The row of the previous cell (cells mostly come row by row).
    last_row: Option<u32>,
}

impl Grid {
    fn new(keep: usize) -> Self {
        Self {
            rows: BTreeMap::new(),
            keep,
            total_rows: 0,
            min_col: u32::MAX,
            max_col: 0,
            seen_rows: Default::default(),
            last_row: None,
        }
    }

    fn put(&mut self, row: u32, col: u32, value: String) {
        if value.trim().is_empty() {
            return;
        }
        self.min_col = self.min_col.min(col);
        self.max_col = self.max_col.max(col);
        if self.last_row != Some(row) {
            self.last_row = Some(row);
            if self.seen_rows.len() < 2_000_000 && self.seen_rows.insert(row) {
                self.total_rows += 1;
            }
        }
        if col >= MAX_CELLS_PER_ROW {
            return;
        }
        if self.rows.len() >= self.keep
            && !self.rows.contains_key(&row)
            && self
                .rows
                .last_key_value()
                .is_some_and(|(&last, _)| row > last)
        {
            return;
        }
        match self.rows.last_entry() {
            Some(mut last) if *last.key() == row => {
                last.get_mut().insert(col, value);
            }
            _ => {
                self.rows.entry(row).or_default().insert(col, value);
            }
        }
        if self.rows.len() > self.keep {
            self.rows.pop_last();
        }
    }

    fn into_part(mut self, label: String, limits: &Limits) -> ExtractedPart {
        let total_columns = if self.rows.is_empty() {
            0
        } else {
            self.max_col - self.min_col + 1
        };
        let shown_cols = (total_columns as usize).min(limits.max_sheet_columns);
        let min_col = self.min_col;
        let rows: Vec<Vec<String>> = std::mem::take(&mut self.rows)
            .into_values()
            .map(|cells| {
                let mut row = vec![String::new(); shown_cols];
                for (col, value) in cells {
                    if let Some(slot) = row.get_mut((col - min_col) as usize) {
                        *slot = value;
                    }
                }
                row
            })
            .collect();
        let included = rows.len().saturating_sub(1) as u32;
        let data_rows = self.total_rows.saturating_sub(1);
        let mut notes = Vec::new();
        if data_rows > included {
            notes.push(format!(
                "showing the first {included} of {data_rows} data rows"
            ));
        }
        if (total_columns as usize) > shown_cols {
            notes.push(format!(
                "showing the first {shown_cols} of {total_columns} columns"
            ));
        }
        let note = notes.join("; ");
        let table = table_from_rows(rows);
        let mut text = String::new();
        if table.header.is_empty() {
            text.push_str("(empty sheet)");
        } else {
            render_table(&mut text, &table);
        }
        if !note.is_empty() {
            text.push_str(&format!(
                "\n[{} rows × {} columns in total; {note}]",
                self.total_rows, total_columns
            ));
        }
        let mut p = part(PartKind::Sheet, label, text.trim_end().to_owned());
        if !table.header.is_empty() {
            p.tables.push(table);
        }
        p.sheet = Some(SheetSummary {
            total_rows: self.total_rows,
            total_columns,
            rows_included: included,
            omitted_note: note,
        });
        p
    }
}

pub fn extract_xlsx(data: &[u8], limits: &Limits) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let entries = zipsafe::read_entries(data, WHAT, limits, |n| {
        (n.ends_with(".xml") || n.ends_with(".rels"))
            && !n.starts_with("xl/media/")
            && !n.starts_with("xl/drawings/")
            && !n.starts_with("xl/charts/")
    })?;
    let packed = zipsafe::repack_stored(&entries)?;
    drop(entries);
    let open = || -> Result<Xlsx<Cursor<&[u8]>>> {
        calamine::open_workbook_from_rs(Cursor::new(packed.as_slice()))
            .map_err(|e| ExtractError::invalid(format!("the {WHAT} is corrupt: {e}")))
    };
    let wb = open()?;
    let names = wb.sheet_names();
    if names.is_empty() {
        return Err(ExtractError::invalid("the Excel workbook has no sheets"));
    }
    // Sheets are read in parallel: contiguous runs of sheets, one workbook handle each.
    let runs = rayon::current_num_threads().clamp(1, names.len());
    let per_run = names.len().div_ceil(runs);
    let chunks: Vec<&[String]> = names.chunks(per_run).collect();
    let mut first = Some(wb);
    let handles: Vec<Xlsx<Cursor<&[u8]>>> = chunks
        .iter()
        .map(|_| match first.take() {
            Some(wb) => Ok(wb),
            None => open(),
        })
        .collect::<Result<_>>()?;
    let results: Vec<Result<Vec<SheetOutcome>>> = {
        use rayon::prelude::*;
        chunks
            .into_par_iter()
            .zip(handles)
            .map(|(names, mut wb)| {
                names
                    .iter()
                    .map(|name| read_sheet(&mut wb, name, limits))
                    .collect()
            })
            .collect()
    };
    let mut parts = Vec::with_capacity(names.len());
    let mut warnings = Vec::new();
    for run in results {
        for outcome in run? {
            match outcome {
                SheetOutcome::Part(p) => parts.push(*p),
                SheetOutcome::Unreadable(w) => warnings.push(w),
            }
        }
    }
    Ok((parts, warnings))
}

enum SheetOutcome {
    Part(Box<ExtractedPart>),
    Unreadable(String),
}

fn read_sheet(wb: &mut Xlsx<Cursor<&[u8]>>, name: &str, limits: &Limits) -> Result<SheetOutcome> {
    limits.check_time()?;
    let mut grid = Grid::new(limits.max_sheet_rows.saturating_add(1));
    let mut reader = match wb.worksheet_cells_reader(name) {
        Ok(r) => r,
        Err(e) => {
            return Ok(SheetOutcome::Unreadable(format!(
                "sheet {name:?} could not be read: {e}"
            )));
        }
    };
    let mut n = 0u32;
    loop {
        n = n.wrapping_add(1);
        if n.is_multiple_of(8192) {
            limits.check_time()?;
        }
        match reader.next_cell() {
            Ok(Some(cell)) => {
                let (row, col) = cell.get_position();
                grid.put(row, col, cell_text(cell.get_value()));
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ExtractError::invalid(format!(
                    "the {WHAT} is corrupt: sheet {name:?}: {e}"
                )));
            }
        }
    }
    drop(reader);
    Ok(SheetOutcome::Part(Box::new(
        grid.into_part(format!("Sheet {name}"), limits),
    )))
}

fn cell_text(v: &DataRef<'_>) -> String {
    match v {
        DataRef::Empty => String::new(),
        DataRef::String(s) => s.clone(),
        DataRef::SharedString(s) => (*s).to_owned(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => number(*f),
        DataRef::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        DataRef::DateTime(dt) => {
            if dt.is_duration() {
                return number(dt.as_f64());
            }
            match dt.as_datetime() {
                Some(t) => {
                    let s = t.to_string();
                    s.strip_suffix(" 00:00:00").map(str::to_owned).unwrap_or(s)
                }
                None => number(dt.as_f64()),
            }
        }
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::Error(e) => e.to_string(),
    }
}

fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

pub fn extract_csv(
    data: &[u8],
    delimiter: u8,
    limits: &Limits,
) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut grid = Grid::new(limits.max_sheet_rows.saturating_add(1));
    let mut record = csv::ByteRecord::new();
    let mut row = 0u32;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(ExtractError::invalid(format!(
                    "the CSV file is malformed near line {}: {e}",
                    row + 1
                )));
            }
        }
        if row.is_multiple_of(8192) {
            limits.check_time()?;
        }
        for (col, field) in record.iter().enumerate() {
            grid.put(
                row,
                u32::try_from(col).unwrap_or(u32::MAX),
                String::from_utf8_lossy(field).into_owned(),
            );
        }
        row += 1;
    }
    Ok((vec![grid.into_part("Table".to_owned(), limits)], Vec::new()))
}
