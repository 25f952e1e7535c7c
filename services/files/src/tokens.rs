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

/// Tokens of a Markdown table as `render_table` writes it (`| a | b |` lines), counted
/// per distinct cell: cl100k's pre-tokenizer never joins a cell with its ` |` border, so
/// this equals counting the text, and repeated values (common in sheets) cost nothing.
pub fn count_table(
    header: &[String],
    rows: &[confab_proto::files::v1::TableRow],
    width: usize,
) -> u32 {
    let mut memo: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let border = count(" |");
    let mut line = |cells: &[String]| -> u32 {
        let mut n = count("|");
        for i in 0..width {
            let cell = cells.get(i).map(String::as_str).unwrap_or("");
            let c = match memo.get(cell) {
                Some(&c) => c,
                None => {
                    let c = if cell.is_empty() {
                        0
                    } else {
                        count(&format!(" {}", crate::extract::md_cell(cell)))
                    };
                    memo.insert(cell.to_owned(), c);
                    c
                }
            };
            n = n.saturating_add(c).saturating_add(border);
        }
        n
    };
    let mut total = line(header);
    let sep: Vec<String> = vec!["---".to_owned(); width];
    total = total.saturating_add(line(&sep));
    for r in rows {
        total = total.saturating_add(line(&r.cells));
    }
    total
}
