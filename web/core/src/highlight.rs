//! A small, dependency-free syntax highlighter for fenced code blocks.
//!
//! It tokenises strings, comments, numbers and a per-language keyword list into
//! `<span class="tok-…">` runs. Good enough to read code; tiny in wasm.

use crate::markdown::escape_html;

#[derive(Clone, Copy)]
struct Lang {
    keywords: &'static [&'static str],
    line_comments: &'static [&'static str],
    block_comment: Option<(&'static str, &'static str)>,
    /// Strings quoted with these characters.
    quotes: &'static [char],
}

const RUST: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while", "Some", "None", "Ok", "Err",
];
const PYTHON: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "False", "finally", "for", "from", "global", "if", "import", "in", "is",
    "lambda", "None", "nonlocal", "not", "or", "pass", "raise", "return", "True", "try", "while",
    "with", "yield", "self", "print",
];
const JS: &[&str] = &[
    "async",
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "default",
    "delete",
    "do",
    "else",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "from",
    "function",
    "if",
    "import",
    "in",
    "instanceof",
    "interface",
    "let",
    "new",
    "null",
    "of",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "type",
    "typeof",
    "undefined",
    "var",
    "void",
    "while",
    "yield",
];
const GO: &[&str] = &[
    "break",
    "case",
    "chan",
    "const",
    "continue",
    "default",
    "defer",
    "else",
    "fallthrough",
    "for",
    "func",
    "go",
    "goto",
    "if",
    "import",
    "interface",
    "map",
    "package",
    "range",
    "return",
    "select",
    "struct",
    "switch",
    "type",
    "var",
    "nil",
    "true",
    "false",
];
const C: &[&str] = &[
    "auto",
    "bool",
    "break",
    "case",
    "char",
    "class",
    "const",
    "continue",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "extern",
    "false",
    "float",
    "for",
    "if",
    "include",
    "int",
    "long",
    "namespace",
    "new",
    "nullptr",
    "private",
    "public",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "true",
    "typedef",
    "union",
    "unsigned",
    "using",
    "virtual",
    "void",
    "while",
    "final",
    "import",
    "package",
    "extends",
    "implements",
    "throws",
    "String",
    "null",
];
const SHELL: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "case", "esac",
    "function", "return", "export", "local", "echo", "cd", "set", "unset", "exit",
];
const SQL: &[&str] = &[
    "select", "from", "where", "and", "or", "not", "insert", "into", "values", "update", "set",
    "delete", "create", "table", "drop", "alter", "join", "left", "right", "inner", "outer", "on",
    "group", "by", "order", "having", "limit", "as", "null", "is", "in", "distinct", "primary",
    "key", "index", "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "INSERT", "INTO", "VALUES",
    "UPDATE", "SET", "DELETE", "CREATE", "TABLE", "DROP", "JOIN", "LEFT", "ON", "GROUP", "BY",
    "ORDER", "HAVING", "LIMIT", "AS", "NULL", "IS", "IN", "DISTINCT", "PRIMARY", "KEY",
];
const JSON_KW: &[&str] = &["true", "false", "null"];

fn lang_for(tag: &str) -> Option<Lang> {
    let slash = &["//"][..];
    let hash = &["#"][..];
    let dq_sq = &['"', '\''][..];
    let l = match tag.to_ascii_lowercase().as_str() {
        "rust" | "rs" => Lang {
            keywords: RUST,
            line_comments: slash,
            block_comment: Some(("/*", "*/")),
            quotes: &['"'],
        },
        "python" | "py" => Lang {
            keywords: PYTHON,
            line_comments: hash,
            block_comment: None,
            quotes: dq_sq,
        },
        "js" | "javascript" | "ts" | "typescript" | "jsx" | "tsx" => Lang {
            keywords: JS,
            line_comments: slash,
            block_comment: Some(("/*", "*/")),
            quotes: &['"', '\'', '`'],
        },
        "go" | "golang" => Lang {
            keywords: GO,
            line_comments: slash,
            block_comment: Some(("/*", "*/")),
            quotes: &['"', '`'],
        },
        "c" | "h" | "cpp" | "c++" | "cc" | "java" | "cs" | "csharp" | "kotlin" | "swift" => Lang {
            keywords: C,
            line_comments: slash,
            block_comment: Some(("/*", "*/")),
            quotes: dq_sq,
        },
        "sh" | "bash" | "shell" | "zsh" | "console" => Lang {
            keywords: SHELL,
            line_comments: hash,
            block_comment: None,
            quotes: dq_sq,
        },
        "sql" => Lang {
            keywords: SQL,
            line_comments: &["--"],
            block_comment: Some(("/*", "*/")),
            quotes: &['\''],
        },
        "json" => Lang {
            keywords: JSON_KW,
            line_comments: &[],
            block_comment: None,
            quotes: &['"'],
        },
        "toml" | "yaml" | "yml" | "ini" => Lang {
            keywords: JSON_KW,
            line_comments: hash,
            block_comment: None,
            quotes: dq_sq,
        },
        _ => return None,
    };
    Some(l)
}

fn push_span(out: &mut String, class: &str, text: &str) {
    out.push_str("<span class=\"tok-");
    out.push_str(class);
    out.push_str("\">");
    out.push_str(&escape_html(text));
    out.push_str("</span>");
}

/// Highlights `code` written in `lang` (the fence's info string) as escaped HTML.
/// Unknown languages are only escaped.
pub fn highlight(code: &str, lang: &str) -> String {
    let Some(l) = lang_for(lang) else {
        return escape_html(code);
    };
    let mut out = String::with_capacity(code.len() * 2);
    let b = code.as_bytes();
    let mut i = 0;
    let mut plain_start = 0;
    let flush = |out: &mut String, from: usize, to: usize| {
        if from < to {
            out.push_str(&escape_html(&code[from..to]));
        }
    };
    while i < b.len() {
        let rest = &code[i..];
        // comments
        if let Some(lc) = l.line_comments.iter().find(|c| rest.starts_with(**c)) {
            let _ = lc;
            flush(&mut out, plain_start, i);
            let end = rest.find('\n').map_or(code.len(), |n| i + n);
            push_span(&mut out, "comment", &code[i..end]);
            i = end;
            plain_start = i;
            continue;
        }
        if let Some((open, close)) = l.block_comment
            && rest.starts_with(open)
        {
            flush(&mut out, plain_start, i);
            let end = rest[open.len()..]
                .find(close)
                .map_or(code.len(), |n| i + open.len() + n + close.len());
            push_span(&mut out, "comment", &code[i..end]);
            i = end;
            plain_start = i;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if l.quotes.contains(&c) {
            flush(&mut out, plain_start, i);
            let mut j = i + c.len_utf8();
            let mut escaped = false;
            while j < b.len() {
                let ch = code[j..].chars().next().unwrap_or(' ');
                j += ch.len_utf8();
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == c || (ch == '\n' && c != '`') {
                    break;
                }
            }
            push_span(&mut out, "string", &code[i..j]);
            i = j;
            plain_start = i;
            continue;
        }
        if c.is_ascii_digit() && (i == 0 || !is_ident(code[..i].chars().next_back().unwrap_or(' ')))
        {
            flush(&mut out, plain_start, i);
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_'))
                .map_or(code.len(), |n| i + n);
            push_span(&mut out, "number", &code[i..end]);
            i = end;
            plain_start = i;
            continue;
        }
        if is_ident_start(c) {
            let end = rest
                .find(|ch: char| !is_ident(ch))
                .map_or(code.len(), |n| i + n);
            let word = &code[i..end];
            if l.keywords.contains(&word) {
                flush(&mut out, plain_start, i);
                push_span(&mut out, "keyword", word);
                plain_start = end;
            }
            i = end;
            continue;
        }
        i += c.len_utf8();
    }
    flush(&mut out, plain_start, code.len());
    out
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_keywords_strings_comments_numbers() {
        let h = highlight("fn main() { let s = \"hi\"; // note\n 42 }", "rust");
        assert!(h.contains(r#"<span class="tok-keyword">fn</span>"#), "{h}");
        assert!(h.contains(r#"<span class="tok-keyword">let</span>"#));
        assert!(
            h.contains(r#"<span class="tok-string">&quot;hi&quot;</span>"#),
            "{h}"
        );
        assert!(h.contains(r#"<span class="tok-comment">// note</span>"#));
        assert!(h.contains(r#"<span class="tok-number">42</span>"#));
        assert!(h.contains("main() { "));
    }

    #[test]
    fn keywords_inside_identifiers_are_not_highlighted() {
        let h = highlight("letter = format_fn", "rust");
        assert!(!h.contains("tok-keyword"), "{h}");
    }

    #[test]
    fn python_hash_comment_and_unknown_language_is_escaped_only() {
        let h = highlight("def f(x):  # <b>\n    return x", "py");
        assert!(
            h.contains(r#"<span class="tok-comment"># &lt;b&gt;</span>"#),
            "{h}"
        );
        assert_eq!(highlight("<a> & b", "brainfuck"), "&lt;a&gt; &amp; b");
    }

    #[test]
    fn unterminated_block_comment_and_string_do_not_panic() {
        let h = highlight("/* open", "c");
        assert!(h.contains("tok-comment"));
        let h = highlight("x = \"unterminated é", "python");
        assert!(h.contains("tok-string"));
        let h = highlight("ünïcode 12 'é'", "js");
        assert!(h.contains("ünïcode"));
    }
}
