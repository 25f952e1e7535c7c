//! The pdfium engine (Chrome's PDF library), bound once per process at run time from a
//! `libpdfium.so` (scripts/install-pdfium.sh puts it in ~/.cache/confab/pdfium; the
//! container image in /usr/local/lib). When it cannot be found, PDFs are read with lopdf
//! and each extraction says so in a warning: a missing library degrades text quality, it
//! does not take uploads down. A library path given explicitly (`CONFAB_PDFIUM_LIB`) that
//! does not load is a deployment mistake: `init` returns it as an error for the caller to
//! report at start; extraction then falls back the same way.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pdfium_render::prelude::Pdfium;

/// The environment variable naming the library file.
pub const LIBRARY_VAR: &str = "CONFAB_PDFIUM_LIB";

static ENGINE: OnceLock<Result<Pdfium, String>> = OnceLock::new();

/// What `init` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineStatus {
    /// pdfium bound from this file.
    Pdfium(PathBuf),
    /// No library found where we looked: the lopdf fallback is in use.
    Fallback(String),
}

/// Where the library is looked for when `CONFAB_PDFIUM_LIB` is unset.
fn default_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(cache) = std::env::var_os("CONFAB_CACHE") {
        paths.push(Path::new(&cache).join("pdfium/libpdfium.so"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        paths.push(Path::new(&home).join(".cache/confab/pdfium/libpdfium.so"));
    }
    paths.push("/usr/local/lib/libpdfium.so".into());
    paths.push("/usr/lib/libpdfium.so".into());
    paths
}

fn bind(path: &Path) -> Result<Pdfium, String> {
    Pdfium::bind_to_library(path)
        .map(Pdfium::new)
        .map_err(|e| format!("cannot load pdfium from {}: {e}", path.display()))
}

/// Binds pdfium once for the process: from `CONFAB_PDFIUM_LIB` when set (an error if it
/// does not load), else from the first default path that exists. Later calls return what
/// the first one found.
pub fn init() -> Result<EngineStatus, String> {
    let explicit = std::env::var_os(LIBRARY_VAR).map(PathBuf::from);
    let mut chosen = None;
    let result = ENGINE.get_or_init(|| match &explicit {
        Some(path) => {
            chosen = Some(path.clone());
            bind(path)
        }
        None => match default_paths().into_iter().find(|p| p.is_file()) {
            Some(path) => {
                chosen = Some(path.clone());
                bind(&path)
            }
            None => Err(format!(
                "pdfium not found ({LIBRARY_VAR} unset; looked in {})",
                default_paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
    });
    match (result, explicit) {
        (Ok(_), _) => Ok(EngineStatus::Pdfium(
            chosen.unwrap_or_else(|| PathBuf::from("(bound earlier)")),
        )),
        (Err(e), Some(_)) => Err(e.clone()),
        (Err(e), None) => Ok(EngineStatus::Fallback(e.clone())),
    }
}

/// The bound engine, binding it on first use.
pub fn engine() -> Option<&'static Pdfium> {
    if ENGINE.get().is_none() {
        let _ = init();
    }
    ENGINE.get().and_then(|r| r.as_ref().ok())
}
