//! Search text handling shared by the stores: the tokenizer (close to SQLite FTS5's
//! `unicode61`), query parsing, snippets with «» markers and their byte offsets, and a
//! BM25-style score for stores that rank in Rust (MongoDB, the naive baseline).

use confab_proto::conversation::v1::Highlight;

use crate::error::{ConversationError, Result};
use crate::model::{MAX_QUERY_CHARS, MAX_QUERY_TERMS};

pub const MARK_OPEN: char = '«';
pub const MARK_CLOSE: char = '»';
/// Longest word kept in the keyword index (longer ones are cut, as FTS would not match them usefully).
pub const MAX_TERM_BYTES: usize = 64;
/// Distinct words indexed per document in the keyword index.
pub const MAX_TERMS_PER_DOC: usize = 2000;

/// Words of `text`: maximal runs of alphanumeric characters, lowercased, with byte ranges.
pub fn tokens(text: &str) -> impl Iterator<Item = (usize, usize, String)> + '_ {
    let mut iter = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = iter.peek() {
            if c.is_alphanumeric() {
                break;
            }
            iter.next();
        }
        let (start, _) = *iter.peek()?;
        let mut end = start;
        let mut word = String::new();
        while let Some(&(i, c)) = iter.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            word.extend(c.to_lowercase());
            end = i + c.len_utf8();
            iter.next();
        }
        Some((start, end, word))
    })
}

/// Distinct index terms of a document (for the MongoDB keyword index).
pub fn index_terms(texts: &[&str]) -> Vec<String> {
    let mut set = std::collections::BTreeSet::new();
    for text in texts {
        for (_, _, w) in tokens(text) {
            if set.len() >= MAX_TERMS_PER_DOC {
                break;
            }
            set.insert(clip(w));
        }
    }
    set.into_iter().collect()
}

fn clip(mut w: String) -> String {
    if w.len() > MAX_TERM_BYTES {
        let mut cut = MAX_TERM_BYTES;
        while !w.is_char_boundary(cut) {
            cut -= 1;
        }
        w.truncate(cut);
    }
    w
}

/// The words of a query, deduplicated, in order. Every word must match (AND).
pub fn parse_query(query: &str) -> Result<Vec<String>> {
    let n = query.chars().count();
    if n > MAX_QUERY_CHARS {
        return Err(ConversationError::invalid(format!(
            "query is {n} characters; the limit is {MAX_QUERY_CHARS}"
        )));
    }
    let mut terms: Vec<String> = Vec::new();
    for (_, _, w) in tokens(query) {
        let w = clip(w);
        if !terms.contains(&w) {
            terms.push(w);
        }
    }
    if terms.is_empty() {
        return Err(ConversationError::invalid(
            "query has no words to search for",
        ));
    }
    if terms.len() > MAX_QUERY_TERMS {
        return Err(ConversationError::invalid(format!(
            "query has {} distinct words; the limit is {MAX_QUERY_TERMS}",
            terms.len()
        )));
    }
    Ok(terms)
}

/// True when every term occurs as a word of `text`.
pub fn matches_all(text: &str, terms: &[String]) -> bool {
    let mut found = vec![false; terms.len()];
    for (_, _, w) in tokens(text) {
        let w = clip(w);
        if let Some(i) = terms.iter().position(|t| *t == w) {
            found[i] = true;
        }
    }
    found.iter().all(|f| *f)
}

/// BM25-style relevance of `text` for `terms` (idf taken as 1; `avg_len` in words).
pub fn score(text: &str, terms: &[String], avg_len: f64) -> f64 {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    let mut tf = vec![0u32; terms.len()];
    let mut len = 0usize;
    for (_, _, w) in tokens(text) {
        len += 1;
        let w = clip(w);
        if let Some(i) = terms.iter().position(|t| *t == w) {
            tf[i] += 1;
        }
    }
    let norm = K1 * (1.0 - B + B * len as f64 / avg_len.max(1.0));
    tf.iter()
        .map(|&f| {
            let f = f64::from(f);
            f * (K1 + 1.0) / (f + norm)
        })
        .sum()
}

/// Up to `window` words around the first match, matches wrapped in «», "…" where cut.
pub fn snippet(text: &str, terms: &[String], window: usize) -> String {
    let words: Vec<(usize, usize, bool)> = tokens(text)
        .map(|(s, e, w)| (s, e, terms.contains(&clip(w))))
        .collect();
    let first = words.iter().position(|w| w.2).unwrap_or(0);
    let lo = first.saturating_sub(window / 4);
    let hi = (lo + window).min(words.len());
    if words.is_empty() {
        return String::new();
    }
    let start = if lo == 0 { 0 } else { words[lo].0 };
    let end = if hi >= words.len() {
        text.len()
    } else {
        words[hi - 1].1
    };
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut pos = start;
    for &(s, e, hit) in &words[lo..hi] {
        if hit {
            out.push_str(&text[pos..s]);
            out.push(MARK_OPEN);
            out.push_str(&text[s..e]);
            out.push(MARK_CLOSE);
            pos = e;
        }
    }
    out.push_str(&text[pos..end]);
    if end < text.len() {
        out.push('…');
    }
    out
}

/// Byte ranges of the text between «» markers in a snippet.
pub fn highlights(snippet: &str) -> Vec<Highlight> {
    let mut out = Vec::new();
    let mut open = None;
    for (i, c) in snippet.char_indices() {
        match c {
            MARK_OPEN => open = Some(i + c.len_utf8()),
            MARK_CLOSE => {
                if let Some(s) = open.take() {
                    out.push(Highlight {
                        start: s as u32,
                        end: i as u32,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_unicode_words() {
        let t: Vec<String> = tokens("Héllo, WORLD! c++ 42x").map(|t| t.2).collect();
        assert_eq!(t, ["héllo", "world", "c", "42x"]);
    }

    #[test]
    fn query_rules() {
        assert_eq!(parse_query("Rust rust, async!").unwrap(), ["rust", "async"]);
        assert!(parse_query("  ...  ").is_err());
        assert!(parse_query(&"a ".repeat(300)).is_err());
    }

    #[test]
    fn snippets_mark_matches_with_offsets() {
        let text = "one two three four five six seven eight nine ten eleven twelve";
        let s = snippet(text, &["seven".into()], 6);
        assert!(s.contains("«seven»"), "{s}");
        assert!(s.starts_with('…'));
        let h = highlights(&s);
        assert_eq!(h.len(), 1);
        assert_eq!(&s[h[0].start as usize..h[0].end as usize], "seven");
        assert!(matches_all(text, &["two".into(), "ten".into()]));
        assert!(!matches_all(text, &["two".into(), "zebra".into()]));
    }
}
