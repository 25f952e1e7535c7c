//! Sheets (XLSX via `xlsx`, and CSV here) as a header row + Markdown table, cell by cell
//! so a sparse sheet cannot make us allocate its whole declared grid; large sheets are
//! summarised (dimensions, header, first rows, a note of what was left out).

use std::collections::BTreeMap;

use crate::types::{ExtractedPart, PartKind, SheetSummary};

use crate::error::{ExtractError, Result};
use crate::extract::{Limits, part, render_table, table_from_rows};

/// Cells kept per row (beyond it the row is cut; the summary says so).
const MAX_CELLS_PER_ROW: u32 = 1024;

/// Rows gathered from a sheet: the first ones in full, the rest only counted.
pub(crate) struct Grid {
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
    pub(crate) fn new(keep: usize) -> Self {
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

    pub(crate) fn put(&mut self, row: u32, col: u32, value: &str) {
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
                last.get_mut().insert(col, value.to_owned());
            }
            _ => {
                self.rows
                    .entry(row)
                    .or_default()
                    .insert(col, value.to_owned());
            }
        }
        if self.rows.len() > self.keep {
            self.rows.pop_last();
        }
    }

    pub(crate) fn into_part(mut self, label: String, limits: &Limits) -> ExtractedPart {
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
                &String::from_utf8_lossy(field),
            );
        }
        row += 1;
    }
    Ok((vec![grid.into_part("Table".to_owned(), limits)], Vec::new()))
}
