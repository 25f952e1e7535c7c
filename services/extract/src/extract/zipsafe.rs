//! Reading OOXML archives without trusting them: entry count capped, every byte
//! inflated counted against one total (declared sizes are ignored), deadline checked.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{ExtractError, Result, human_size};
use crate::extract::Limits;

/// An opened archive. Clones share the inflate budget, so entries can be inflated on
/// several threads at once and the total is still bounded.
#[derive(Clone)]
pub struct Archive<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    inflated: Arc<AtomicU64>,
    what: &'static str,
    limits: &'a Limits,
}

impl<'a> Archive<'a> {
    pub fn open(data: &'a [u8], what: &'static str, limits: &'a Limits) -> Result<Self> {
        let zip = zip::ZipArchive::new(Cursor::new(data)).map_err(|e| {
            ExtractError::invalid(format!("the {what} is corrupt (bad ZIP structure: {e})"))
        })?;
        if zip.len() > limits.max_zip_entries {
            return Err(ExtractError::invalid(format!(
                "the {what} has {} entries; at most {} are accepted (possible ZIP bomb)",
                zip.len(),
                limits.max_zip_entries
            )));
        }
        Ok(Self {
            zip,
            inflated: Arc::default(),
            what,
            limits,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .collect()
    }

    /// The inflated bytes of entry `name`, or None when the archive has no such entry.
    pub fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        self.limits.check_time()?;
        let Some(index) = self.zip.index_for_name(name) else {
            return Ok(None);
        };
        let what = self.what;
        let mut entry = self
            .zip
            .by_index(index)
            .map_err(|e| ExtractError::invalid(format!("the {what} is corrupt: {e}")))?;
        if entry.is_dir() {
            return Ok(None);
        }
        // Counted as it inflates, in steps, against the budget all clones share: entries
        // read on several threads at once cannot together overshoot it by more than a step.
        const STEP: usize = 256 * 1024;
        let max = self.limits.max_inflated_bytes;
        let mut buf = Vec::with_capacity((entry.size().min(max).min(64 << 20)) as usize);
        loop {
            let n = (&mut entry)
                .take(STEP as u64)
                .read_to_end(&mut buf)
                .map_err(|e| {
                    ExtractError::invalid(format!("the {what} is corrupt: cannot read {name}: {e}"))
                })?;
            if n == 0 {
                break;
            }
            let total = self
                .inflated
                .fetch_add(n as u64, Ordering::Relaxed)
                .saturating_add(n as u64);
            if total > max {
                return Err(ExtractError::invalid(format!(
                    "the {what} inflates to more than {} (possible ZIP bomb); it was not processed",
                    human_size(max)
                )));
            }
        }
        Ok(Some(buf))
    }
}

/// Inflates the entries `want` selects, bounded by `limits`.
pub fn read_entries(
    data: &[u8],
    what: &'static str,
    limits: &Limits,
    want: impl Fn(&str) -> bool,
) -> Result<HashMap<String, Vec<u8>>> {
    let mut archive = Archive::open(data, what, limits)?;
    let mut out = HashMap::new();
    for name in archive.names() {
        if want(&name)
            && let Some(bytes) = archive.read(&name)?
        {
            out.insert(name, bytes);
        }
    }
    Ok(out)
}
