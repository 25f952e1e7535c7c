//! Markdown → HTML for chat messages (CommonMark + GFM tables, strikethrough, task lists).
//!
//! The output is safe to inject with `dangerous_inner_html`: raw HTML in the source is shown
//! as text, link targets other than http(s)/mailto/relative are neutralised, and fenced code
//! blocks get a header with the language, a copy button and keyword highlighting.

use pulldown_cmark::{CodeBlockKind, CowStr, Event, Options, Parser, Tag, TagEnd, html};

use crate::highlight::highlight;

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// True for URLs a chat message may link to.
pub fn is_safe_url(url: &str) -> bool {
    let u = url.trim().to_ascii_lowercase();
    match u.find(':') {
        // A scheme is only what comes before the first ':' if no '/', '?' or '#' precedes it.
        Some(i) if !u[..i].contains(['/', '?', '#']) => {
            let scheme = &u[..i];
            matches!(scheme, "http" | "https" | "mailto")
        }
        _ => true,
    }
}

/// Renders a (possibly still streaming, i.e. truncated) Markdown message to HTML.
pub fn render(markdown: &str) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    opts.insert(Options::ENABLE_TASKLISTS);
    let parser = Parser::new_ext(markdown, opts);

    let mut events: Vec<Event<'_>> = Vec::new();
    let mut code: Option<(String, String)> = None; // (lang, text)
    let mut image_depth = 0usize;
    for ev in parser {
        if let Some((_, text)) = code.as_mut() {
            match ev {
                Event::Text(t) => text.push_str(&t),
                Event::End(TagEnd::CodeBlock) => {
                    let (lang, text) = code.take().unwrap_or_default();
                    events.push(Event::Html(CowStr::from(code_block_html(&lang, &text))));
                }
                _ => {}
            }
            continue;
        }
        match ev {
            Event::Start(Tag::CodeBlock(kind)) => {
                let lang = match kind {
                    CodeBlockKind::Fenced(info) => {
                        info.split([' ', ',', '{']).next().unwrap_or("").to_string()
                    }
                    CodeBlockKind::Indented => String::new(),
                };
                code = Some((lang, String::new()));
            }
            Event::Start(Tag::Link {
                dest_url, title, ..
            }) => {
                let href = if is_safe_url(&dest_url) {
                    dest_url.to_string()
                } else {
                    "#".to_string()
                };
                let mut a = format!(
                    "<a href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\"",
                    escape_html(&href)
                );
                if !title.is_empty() {
                    a.push_str(&format!(" title=\"{}\"", escape_html(&title)));
                }
                a.push('>');
                events.push(Event::InlineHtml(CowStr::from(a)));
            }
            Event::End(TagEnd::Link) => events.push(Event::InlineHtml(CowStr::from("</a>"))),
            // Images are shown as links: a chat answer should not make the browser fetch
            // arbitrary URLs on its own.
            Event::Start(Tag::Image { dest_url, .. }) => {
                image_depth += 1;
                let href = if is_safe_url(&dest_url) {
                    dest_url.to_string()
                } else {
                    "#".to_string()
                };
                events.push(Event::InlineHtml(CowStr::from(format!(
                    "<a class=\"md-image\" href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">🖼 ",
                    escape_html(&href)
                ))));
            }
            Event::End(TagEnd::Image) => {
                image_depth = image_depth.saturating_sub(1);
                events.push(Event::InlineHtml(CowStr::from("</a>")));
            }
            Event::Html(h) | Event::InlineHtml(h) => events.push(Event::Text(h)),
            other => events.push(other),
        }
    }
    // A fence still open at the end of a streaming message.
    if let Some((lang, text)) = code.take() {
        events.push(Event::Html(CowStr::from(code_block_html(&lang, &text))));
    }
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, events.into_iter());
    // Tables scroll horizontally on narrow screens.
    out.replace("<table>", "<div class=\"table-wrap\"><table>")
        .replace("</table>", "</table></div>")
}

fn code_block_html(lang: &str, text: &str) -> String {
    let label = if lang.is_empty() { "text" } else { lang };
    format!(
        "<div class=\"code-block\"><div class=\"code-head\"><span class=\"code-lang\">{}</span>\
         <button type=\"button\" class=\"copy-code\" data-testid=\"copy-code\">Copy</button></div>\
         <pre><code class=\"language-{}\">{}</code></pre></div>\n",
        escape_html(label),
        escape_html(label),
        highlight(text, lang)
    )
}

/// Plain text of a message for the clipboard and for titles (Markdown left as written).
pub fn first_line(s: &str, max_chars: usize) -> String {
    let line = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() <= max_chars {
        line.to_string()
    } else {
        let mut t: String = line.chars().take(max_chars.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_emphasis_and_lists() {
        let h = render("Hello **world**\n\n- one\n- two\n\n1. first\n2. second\n");
        assert!(h.contains("<p>Hello <strong>world</strong></p>"), "{h}");
        assert!(h.contains("<ul>\n<li>one</li>\n<li>two</li>\n</ul>"), "{h}");
        assert!(h.contains("<ol>\n<li>first</li>"), "{h}");
    }

    #[test]
    fn tables_are_rendered_and_wrapped() {
        let h = render("| a | b |\n|---|--:|\n| 1 | 2 |\n");
        assert!(h.contains("<div class=\"table-wrap\"><table>"), "{h}");
        assert!(h.contains("<th>a</th>"), "{h}");
        assert!(h.contains("<td style=\"text-align: right\">2</td>"), "{h}");
        assert!(h.contains("</table></div>"));
    }

    #[test]
    fn links_open_in_new_tab_and_javascript_is_neutralised() {
        let h = render("[ok](https://example.com/a?b=1&c=2) [bad](javascript:alert(1))");
        assert!(
            h.contains("<a href=\"https://example.com/a?b=1&amp;c=2\" target=\"_blank\" rel=\"noopener noreferrer\">ok</a>"),
            "{h}"
        );
        assert!(
            h.contains("<a href=\"#\" target=\"_blank\" rel=\"noopener noreferrer\">bad</a>"),
            "{h}"
        );
        assert!(!h.contains("javascript:"));
        assert!(is_safe_url("/relative/path:x"));
        assert!(is_safe_url("mailto:a@b.c"));
        assert!(!is_safe_url(" JavaScript:alert(1)"));
        assert!(!is_safe_url("data:text/html,x"));
    }

    #[test]
    fn raw_html_is_shown_as_text() {
        let h = render("<script>alert(1)</script>\n\nhi <img src=x onerror=alert(1)>");
        assert!(!h.contains("<script>"), "{h}");
        assert!(!h.contains("<img"), "{h}");
        assert!(h.contains("&lt;script&gt;"), "{h}");
    }

    #[test]
    fn fenced_code_gets_language_copy_button_and_highlighting() {
        let h = render("```rust\nfn main() {}\n```\n");
        assert!(h.contains("<span class=\"code-lang\">rust</span>"), "{h}");
        assert!(h.contains("data-testid=\"copy-code\""));
        assert!(
            h.contains(
                "<code class=\"language-rust\"><span class=\"tok-keyword\">fn</span> main() {}"
            ),
            "{h}"
        );
    }

    #[test]
    fn code_is_escaped_and_unclosed_fence_while_streaming_still_renders() {
        let h = render("text\n```html\n<div>");
        assert!(h.contains("code-block"), "{h}");
        assert!(h.contains("&lt;div&gt;"), "{h}");
        assert!(!h.contains("<div>\n"), "{h}");
    }

    #[test]
    fn images_become_links() {
        let h = render("![a cat](https://example.com/cat.png)");
        assert!(!h.contains("<img"), "{h}");
        assert!(
            h.contains("class=\"md-image\" href=\"https://example.com/cat.png\""),
            "{h}"
        );
    }

    #[test]
    fn first_line_truncates_on_chars() {
        assert_eq!(first_line("\n  héllo world  \nmore", 50), "héllo world");
        assert_eq!(first_line("ééééééé", 4), "ééé…");
    }
}
