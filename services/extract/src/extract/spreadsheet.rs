//! XLS, XLSB and ODS through calamine, into the same sheet parts as XLSX (`sheet::Grid`:
//! header row + Markdown table, large sheets summarised). XLSB and ODS are ZIP packages:
//! their entries are inflated once against the shared byte budget before calamine reads
//! them, so a bomb is refused before calamine allocates for it. XLS (a compound file) is
//! not compressed; its size is bounded by the upload limit.

use std::io::Cursor;

use calamine::{Data, Reader};

use crate::detect::Detected;
use crate::error::{ExtractError, Result};
use crate::extract::sheet::Grid;
use crate::extract::{Limits, describe, zipsafe};
use crate::types::ExtractedPart;

pub fn extract(
    detected: Detected,
    data: &[u8],
    limits: &Limits,
) -> Result<(Vec<ExtractedPart>, Vec<String>)> {
    let what = describe(detected);
    if matches!(detected, Detected::Xlsb | Detected::Ods) {
        let mut archive = zipsafe::Archive::open(data, what, limits)?;
        for name in archive.names() {
            archive.read(&name)?;
        }
    }
    limits.check_time()?;
    let cursor = Cursor::new(data);
    let sheets = match detected {
        Detected::Xls => read_all(
            calamine::Xls::new(cursor).map_err(|e| open_error(what, e))?,
            limits,
        ),
        Detected::Xlsb => read_all(
            calamine::Xlsb::new(cursor).map_err(|e| open_error(what, e))?,
            limits,
        ),
        _ => read_all(
            calamine::Ods::new(cursor).map_err(|e| open_error(what, e))?,
            limits,
        ),
    }?;
    let mut warnings = Vec::new();
    let mut parts = Vec::new();
    for (name, sheet) in sheets {
        match sheet {
            Ok(grid) => parts.push(grid.into_part(format!("Sheet {name}"), limits)),
            Err(e) => warnings.push(format!("sheet {name:?} could not be read: {e}")),
        }
    }
    if parts.is_empty() {
        return Err(ExtractError::invalid(format!(
            "the {what} has no readable sheets"
        )));
    }
    Ok((parts, warnings))
}

fn open_error(what: &str, e: impl std::fmt::Display) -> ExtractError {
    let msg = e.to_string();
    if msg.to_ascii_lowercase().contains("password") || msg.contains("encrypt") {
        ExtractError::invalid(format!(
            "the {what} is password-protected; remove the password and upload it again"
        ))
    } else {
        ExtractError::invalid(format!("the {what} is corrupt or truncated: {msg}"))
    }
}

type Sheets = Vec<(String, std::result::Result<Grid, String>)>;

fn read_all<R, RS>(mut book: R, limits: &Limits) -> Result<Sheets>
where
    R: Reader<RS>,
    RS: std::io::Read + std::io::Seek,
    R::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    for name in book.sheet_names() {
        limits.check_time()?;
        let range = match book.worksheet_range(&name) {
            Ok(r) => r,
            Err(e) => {
                out.push((name, Err(e.to_string())));
                continue;
            }
        };
        let mut grid = Grid::new(limits.max_sheet_rows.saturating_add(1));
        let (row0, col0) = range.start().unwrap_or((0, 0));
        let mut text = String::new();
        for (i, (r, c, v)) in range.used_cells().enumerate() {
            if i % 65_536 == 0 {
                limits.check_time()?;
            }
            text.clear();
            shown(v, &mut text);
            grid.put(row0 + r as u32, col0 + c as u32, &text);
        }
        out.push((name, Ok(grid)));
    }
    Ok(out)
}

/// A cell as a spreadsheet shows it by default: integers without ".0", dates as
/// `YYYY-MM-DD` (with the time when there is one), booleans as TRUE/FALSE.
fn shown(v: &Data, out: &mut String) {
    use std::fmt::Write;
    match v {
        Data::Empty => {}
        Data::String(s) => out.push_str(s),
        Data::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
            let _ = write!(out, "{}", *f as i64);
        }
        Data::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Data::Bool(b) => out.push_str(if *b { "TRUE" } else { "FALSE" }),
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(t) if !dt.is_duration() => {
                let s = t.to_string();
                out.push_str(s.strip_suffix(" 00:00:00").unwrap_or(&s));
            }
            _ => {
                let _ = write!(out, "{}", dt.as_f64());
            }
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => out.push_str(s),
        Data::Error(e) => {
            let _ = write!(out, "{e}");
        }
    }
}
