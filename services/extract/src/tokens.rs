//! cl100k token counts with `bpe-openai` (the same counts as tiktoken, several times
//! faster: a DFA pre-tokenizer instead of a backtracking regex, and counting without
//! building the token list). The tables are built once per process (warmed up at
//! service start).

use rustc_hash::FxHashMap as HashMap;

use crate::types::Table;
use bpe_openai::Tokenizer;

/// Distinct cells beyond which a table is counted on several threads.
const PARALLEL_CELLS: usize = 2_048;

fn bpe() -> &'static Tokenizer {
    bpe_openai::cl100k_base()
}

/// Builds the tables now (call from a blocking thread).
pub fn warm_up() {
    let _ = bpe().count("warm up");
}

/// Tokens of `text` (cl100k).
pub fn count(text: &str) -> u32 {
    if text.is_empty() {
        return 0;
    }
    u32::try_from(bpe().count(text)).unwrap_or(u32::MAX)
}

/// Tokens of a sheet part's `text`, which is `render_table(table)` followed by an optional
/// note. The table is counted per distinct cell: cl100k's pre-tokenizer never joins a
/// cell with its `|` borders, so this equals counting the text, and repeated values
/// (common in sheets) cost nothing. Falls back to counting the text if it is not that
/// rendering (e.g. cut by the size cap).
pub fn count_sheet(text: &str, table: &Table) -> u32 {
    let width = crate::extract::table_width(table);
    let lines = table.rows.len() + 2;
    // Bytes of the rendering and occurrences of each distinct cell.
    let mut rendered = lines * (2 + 3 * width) + 3 * width;
    let mut seen: HashMap<&str, u64> = HashMap::default();
    for cells in std::iter::once(&table.header).chain(table.rows.iter().map(|r| &r.cells)) {
        for i in 0..width {
            let cell = cells.get(i).map(String::as_str).unwrap_or("");
            rendered += crate::extract::md_cell_len(cell);
            *seen.entry(cell).or_insert(0) += 1;
        }
    }
    // The last line's closing border joins what follows it (a line break, the note).
    let Some(tail) = rendered
        .checked_sub(3)
        .filter(|&at| text.len() + 1 >= rendered && text.get(at..at + 2) == Some(" |"))
        .and_then(|at| text.get(at..))
    else {
        return count(text);
    };
    let distinct: Vec<(&str, u64)> = seen.into_iter().collect();
    // One piece cache per thread: cells split into the pre-tokenizer's pieces repeat
    // pieces far more than they repeat whole (digit groups, words, separators).
    let cost = |cache: &mut PieceCache, &(cell, times): &(&str, u64)| -> u64 {
        cache.line.clear();
        cache.line.push(' ');
        crate::extract::md_cell_into(&mut cache.line, cell);
        let line = std::mem::take(&mut cache.line);
        let n = cache.count(&line);
        cache.line = line;
        n * times
    };
    let cells: u64 = if distinct.len() >= PARALLEL_CELLS {
        use rayon::prelude::*;
        distinct
            .par_iter()
            .with_min_len(256)
            .fold(
                || (PieceCache::default(), 0u64),
                |(mut cache, sum), cell| {
                    let n = cost(&mut cache, cell);
                    (cache, sum + n)
                },
            )
            .map(|(_, sum)| sum)
            .sum()
    } else {
        let mut cache = PieceCache::default();
        distinct.iter().map(|cell| cost(&mut cache, cell)).sum()
    };
    // Each line is "|", then per cell " <cell>" and " |"; a line ends " |\n" instead.
    let (bar, border, border_nl) = (count("|"), count(" |"), count(" |\n"));
    let per_line = u64::from(bar) + (width as u64 - 1) * u64::from(border);
    let total = cells
        + lines as u64 * per_line
        + (lines as u64 - 1) * u64::from(border_nl)
        + width as u64 * u64::from(count(" ---"))
        + u64::from(count(tail));
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// Counts text by cl100k's pre-tokenizer pieces, each distinct piece counted once.
#[derive(Default)]
struct PieceCache {
    counts: HashMap<String, u32>,
    /// A reusable buffer for the caller.
    line: String,
}

impl PieceCache {
    /// Tokens of `text`: BPE never merges across pieces, so the count is the sum over the
    /// pieces. Text outside the simple alphabet (see `simple_pieces`) is counted whole.
    fn count(&mut self, text: &str) -> u64 {
        let mut total = 0u64;
        let simple = simple_pieces(text, |piece| {
            total += u64::from(match self.counts.get(piece) {
                Some(&n) => n,
                None => {
                    let n = count(piece);
                    self.counts.insert(piece.to_owned(), n);
                    n
                }
            });
        });
        if simple {
            total
        } else {
            u64::from(count(text))
        }
    }
}

fn is_punct(b: u8) -> bool {
    b.is_ascii_punctuation()
}

/// Cuts `text` the way cl100k's pre-tokenizer does, for text of printable ASCII without
/// apostrophes (no contractions), runs of spaces or a trailing space: letter runs with at
/// most one non-letter before them, digit groups of one to three, punctuation runs with
/// at most one space before them, and a space before a digit on its own. Returns false,
/// without calling `each`, for any other text.
fn simple_pieces(text: &str, mut each: impl FnMut(&str)) -> bool {
    let b = text.as_bytes();
    let n = b.len();
    if n == 0
        || b[n - 1] == b' '
        || b.iter().any(|&c| !(0x20..0x7f).contains(&c) || c == b'\'')
        || b.windows(2).any(|w| w == b"  ")
    {
        return false;
    }
    let run = |mut i: usize, pred: fn(u8) -> bool| {
        while i < n && pred(b[i]) {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while i < n {
        let start = i;
        let c = b[i];
        let next = b.get(i + 1).copied();
        i = if c.is_ascii_alphabetic() {
            run(i + 1, |c| c.is_ascii_alphabetic())
        } else if c.is_ascii_digit() {
            (i + 1..n.min(i + 3))
                .find(|&j| !b[j].is_ascii_digit())
                .unwrap_or(n.min(i + 3))
        } else if next.is_some_and(|c| c.is_ascii_alphabetic()) {
            run(i + 2, |c| c.is_ascii_alphabetic())
        } else if c == b' ' && next.is_some_and(is_punct) {
            run(i + 2, is_punct)
        } else if c == b' ' {
            i + 1
        } else {
            run(i + 1, is_punct)
        };
        each(&text[start..i]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text with the shapes extraction produces: words, numbers, dates, Markdown tables,
    /// whitespace runs, line breaks, punctuation, contractions and non-Latin scripts.
    fn samples() -> Vec<String> {
        let mut out: Vec<String> = [
            "",
            " ",
            "  ",
            "\n",
            "a  b",
            "a \n\n  b   \n",
            "   trailing   ",
            "\t\ttabs\t and\r\nCRLF\r\n",
            "It's we'LL they've I'd you're",
            "| Region | Q1 total | Date |\n| --- | --- | --- |\n| North | 10.5 | 2024-01-15 |",
            "12345678901234567890 3.14159 -42 1e10 0x1F",
            "Ünïcödé façade naïve — “quotes” … 日本語のテキスト 中文 한국어 العربية עברית",
            "emoji 👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
            "fn main() { println!(\"{}\", x?); } // code\n    indented();",
            "https://example.com/a/b?c=d&e=f#g user@example.com",
            "  \n  \n\n\n   x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let alphabet: Vec<char> = "ab Z9 .,;'\"\n\t\r-|éß中👍 \u{00a0}\u{2003}"
            .chars()
            .collect();
        for len in [1usize, 5, 17, 64, 300] {
            for _ in 0..40 {
                let s: String = (0..len)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        alphabet[(rng % alphabet.len() as u64) as usize]
                    })
                    .collect();
                out.push(s);
            }
        }
        out
    }

    #[test]
    fn simple_pieces_add_up_to_the_whole_count() {
        let alphabet = b"aZq09 5.-,:/$%()|#+=_";
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut checked = 0;
        for len in [1usize, 2, 3, 4, 6, 9, 14, 25] {
            for _ in 0..3000 {
                let s: String = (0..len)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        alphabet[(rng % alphabet.len() as u64) as usize] as char
                    })
                    .collect();
                let mut pieces = vec![];
                if simple_pieces(&s, |p| pieces.push(p.to_owned())) {
                    checked += 1;
                    assert_eq!(pieces.concat(), s);
                    let sum: u32 = pieces.iter().map(|p| count(p)).sum();
                    assert_eq!(sum, count(&s), "{s:?} → {pieces:?}");
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
        for s in [
            " 2024-01-15",
            " -42.5",
            " 12345678",
            " $1,250.00",
            " (b)",
            " item7 x",
        ] {
            let mut cache = PieceCache::default();
            assert_eq!(cache.count(s), u64::from(count(s)), "{s:?}");
            assert_eq!(cache.count(s), u64::from(count(s)), "{s:?} (cached)");
        }
        // Outside the alphabet: counted whole.
        for s in [" it's", "a  b", "b ", "日本", "tab\t"] {
            assert!(!simple_pieces(s, |_| {}), "{s:?}");
            assert_eq!(PieceCache::default().count(s), u64::from(count(s)));
        }
    }

    #[test]
    fn counts_equal_tiktoken() {
        let tiktoken = tiktoken_rs::cl100k_base().expect("tiktoken tables");
        for s in samples() {
            assert_eq!(
                count(&s) as usize,
                tiktoken.encode_ordinary(&s).len(),
                "count differs for {s:?}"
            );
        }
    }

    #[test]
    fn counts_equal_tiktoken_on_the_test_corpus() {
        use crate::corpus::{self, Cell, DocBlock};
        use crate::detect::detect;
        use crate::extract::{Limits, extract};
        let tiktoken = tiktoken_rs::cl100k_base().expect("tiktoken tables");
        let pages: Vec<Vec<String>> = (0..3)
            .map(|p| (0..20).map(|l| corpus::words(p * 20 + l, 9)).collect())
            .collect();
        let sheet: Vec<Vec<Cell>> = std::iter::once(vec![
            Cell::Str("Name | pipe".into()),
            Cell::Str("Units".into()),
            Cell::Str("When".into()),
        ])
        .chain((0..3000u64).map(|r| {
            vec![
                Cell::Str(corpus::words(r, 2)),
                Cell::Num(r as f64 / 8.0),
                Cell::Date(45000.0 + (r % 300) as f64),
            ]
        }))
        .collect();
        let files = [
            ("a.pdf", corpus::pdf(&pages)),
            (
                "a.docx",
                corpus::docx(&[
                    DocBlock::Heading(1, "Title".into()),
                    DocBlock::Para(corpus::words(7, 60)),
                    DocBlock::Table(vec![
                        vec!["h1".into(), "h2".into()],
                        vec!["x | y".into(), "".into()],
                    ]),
                ]),
            ),
            ("a.xlsx", corpus::xlsx(&[("Big", sheet)])),
            ("a.csv", b"a,b\n1,2\n,x y\n".to_vec()),
        ];
        for (name, data) in files {
            let mut limits = Limits::new(std::time::Duration::from_secs(120));
            limits.max_sheet_rows = usize::MAX;
            let ex = extract(detect(&data, name).expect("detect"), &data, &limits).expect(name);
            for p in &ex.parts {
                let want = tiktoken.encode_ordinary(&p.text).len() as u32;
                assert_eq!(p.token_count, want, "{name} part {}", p.index);
                assert_eq!(count(&p.text), want, "{name} part {}", p.index);
            }
        }
    }
}
