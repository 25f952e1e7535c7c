//! cl100k token counts. The BPE tables take a while to build, so they are built once
//! per process (and warmed up at service start).

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();

fn bpe() -> Option<&'static CoreBPE> {
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
}

/// Builds the tables now (call from a blocking thread).
pub fn warm_up() {
    let _ = bpe();
}

/// Tokens of `text` (cl100k); a bytes/4 estimate if the tables failed to load.
pub fn count(text: &str) -> u32 {
    if text.is_empty() {
        return 0;
    }
    let n = match bpe() {
        Some(bpe) => bpe.encode_ordinary(text).len(),
        None => text.len().div_ceil(4),
    };
    u32::try_from(n).unwrap_or(u32::MAX)
}
