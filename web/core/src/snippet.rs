//! Search snippets: matches are wrapped in «» in the text, and given as UTF-8 byte ranges.

/// A run of snippet text, highlighted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub highlighted: bool,
}

fn push(out: &mut Vec<Segment>, text: &str, highlighted: bool) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(last) if last.highlighted == highlighted => last.text.push_str(text),
        _ => out.push(Segment {
            text: text.to_string(),
            highlighted,
        }),
    }
}

/// Splits a snippet into segments. «» markers win when present (and are removed);
/// otherwise the byte ranges are used, skipping any that are out of bounds or not on
/// character boundaries.
pub fn segments(snippet: &str, ranges: &[(u32, u32)]) -> Vec<Segment> {
    let mut out = Vec::new();
    if snippet.contains('«') {
        let mut rest = snippet;
        while let Some(open) = rest.find('«') {
            push(&mut out, &rest[..open], false);
            let after = &rest[open + '«'.len_utf8()..];
            match after.find('»') {
                Some(close) => {
                    push(&mut out, &after[..close], true);
                    rest = &after[close + '»'.len_utf8()..];
                }
                None => {
                    push(&mut out, after, true);
                    rest = "";
                }
            }
        }
        push(&mut out, rest, false);
        return out;
    }
    let mut sorted: Vec<(usize, usize)> = ranges
        .iter()
        .map(|&(s, e)| (s as usize, e as usize))
        .collect();
    sorted.sort_unstable();
    let mut pos = 0;
    for (s, e) in sorted {
        if s < pos
            || e <= s
            || e > snippet.len()
            || !snippet.is_char_boundary(s)
            || !snippet.is_char_boundary(e)
        {
            continue;
        }
        push(&mut out, &snippet[pos..s], false);
        push(&mut out, &snippet[s..e], true);
        pos = e;
    }
    push(&mut out, &snippet[pos..], false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(t: &str, h: bool) -> Segment {
        Segment {
            text: t.into(),
            highlighted: h,
        }
    }

    #[test]
    fn markers_are_parsed_and_removed() {
        assert_eq!(
            segments("…the «quick» brown «fox»!", &[]),
            vec![
                seg("…the ", false),
                seg("quick", true),
                seg(" brown ", false),
                seg("fox", true),
                seg("!", false)
            ]
        );
        assert_eq!(segments("«unclosed", &[]), vec![seg("unclosed", true)]);
    }

    #[test]
    fn byte_ranges_are_used_without_markers_and_bad_ranges_skipped() {
        let s = "héllo wörld";
        // "wörld" starts at byte 7
        assert_eq!(
            segments(s, &[(7, 13)]),
            vec![seg("héllo ", false), seg("wörld", true)]
        );
        // 2 is inside 'é': skipped; out of bounds: skipped
        assert_eq!(segments(s, &[(2, 4), (7, 99)]), vec![seg(s, false)]);
        assert_eq!(segments("", &[(0, 1)]), vec![]);
    }
}
