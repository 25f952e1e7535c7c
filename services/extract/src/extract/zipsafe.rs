//! Reading OOXML archives without trusting them: entry count capped, every byte
//! inflated counted against a total (declared sizes are ignored), deadline checked.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use crate::error::{ExtractError, Result, human_size};
use crate::extract::Limits;

/// Inflates the entries `want` selects, bounded by `limits`.
pub fn read_entries(
    data: &[u8],
    what: &str,
    limits: &Limits,
    want: impl Fn(&str) -> bool,
) -> Result<HashMap<String, Vec<u8>>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(data)).map_err(|e| {
        ExtractError::invalid(format!("the {what} is corrupt (bad ZIP structure: {e})"))
    })?;
    if archive.len() > limits.max_zip_entries {
        return Err(ExtractError::invalid(format!(
            "the {what} has {} entries; at most {} are accepted (possible ZIP bomb)",
            archive.len(),
            limits.max_zip_entries
        )));
    }
    let mut total: u64 = 0;
    let mut out = HashMap::new();
    for i in 0..archive.len() {
        limits.check_time()?;
        let mut entry = archive
            .by_index(i)
            .map_err(|e| ExtractError::invalid(format!("the {what} is corrupt: {e}")))?;
        let Ok(name) = entry.name().map(|n| n.into_owned()) else {
            continue;
        };
        if entry.is_dir() || !want(&name) {
            continue;
        }
        let remaining = limits.max_inflated_bytes.saturating_sub(total);
        let mut buf = Vec::with_capacity((entry.size().min(remaining).min(64 << 20)) as usize);
        (&mut entry)
            .take(remaining + 1)
            .read_to_end(&mut buf)
            .map_err(|e| {
                ExtractError::invalid(format!("the {what} is corrupt: cannot read {name}: {e}"))
            })?;
        total += buf.len() as u64;
        if total > limits.max_inflated_bytes {
            return Err(ExtractError::invalid(format!(
                "the {what} inflates to more than {} (possible ZIP bomb); it was not processed",
                human_size(limits.max_inflated_bytes)
            )));
        }
        out.insert(name, buf);
    }
    Ok(out)
}

/// Re-packs already-inflated entries as an uncompressed archive, so a parser that reads
/// it (calamine) cannot be made to inflate anything.
pub fn repack_stored(entries: &HashMap<String, Vec<u8>>) -> Result<Vec<u8>> {
    use std::io::Write;
    let size: usize = entries.values().map(|v| v.len() + 128).sum();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(size + 1024)));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(size as u64 > u32::MAX as u64 / 2);
    for (name, bytes) in entries {
        w.start_file(name.as_str(), opts)
            .map_err(|e| ExtractError::Internal(e.into()))?;
        w.write_all(bytes)
            .map_err(|e| ExtractError::Internal(e.into()))?;
    }
    let cursor = w.finish().map_err(|e| ExtractError::Internal(e.into()))?;
    Ok(cursor.into_inner())
}
