//! Context planning (pure): what of the system prompt, history and attachments goes
//! to the model, counted in the model's tokens against its window. The answer's
//! allowance is reserved first; the current message and its attachments come next
//! (whole parts while they fit, then a truncated part, then notes on what was left
//! out); the newest history that still fits fills the rest, contiguous.

use confab_proto::conversation::v1 as conv;

use crate::provider::{ModelSpec, Part, PromptMessage, Role};
use crate::tokens::{PER_MESSAGE_OVERHEAD, REPLY_PRIMING};

/// Rough cost of one image for vision models (a 512-px tile grid at high detail).
pub const IMAGE_TOKENS: u32 = 765;
/// A truncated part is only worth including with at least this many tokens.
const MIN_PARTIAL_TOKENS: u32 = 64;

#[derive(Debug, Clone)]
pub struct HistoryMessage {
    pub id: String,
    pub role: Role,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct TextPart {
    pub label: String,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct FileInput {
    pub file_id: String,
    pub filename: String,
    pub text_parts: Vec<TextPart>,
    /// Data URL when the file is an image.
    pub image: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PlanInput {
    pub system_prompt: String,
    /// Oldest first; the current user message is not part of it.
    pub history: Vec<HistoryMessage>,
    pub current_id: String,
    pub current_text: String,
    pub files: Vec<FileInput>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub context: conv::ContextPlan,
    pub messages: Vec<PromptMessage>,
    /// Images attached but not shown because the model cannot see them.
    pub unseen_images: Vec<String>,
    pub max_output_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the message needs {needed} tokens but {model} has room for {available} (context window {window}, {reserved} kept for the answer); shorten it"
)]
pub struct TooLarge {
    pub model: String,
    pub needed: u32,
    pub available: u32,
    pub window: u32,
    pub reserved: u32,
}

/// Tokens the answer is allowed: the model's output limit, at most a quarter of the window.
pub fn answer_reserve(model: &ModelSpec) -> u32 {
    model.max_output_tokens.min(model.context_window / 4).max(1)
}

/// The longest prefix of `text` within `max_tokens` (on a char boundary).
pub fn truncate_to_tokens(text: &str, max_tokens: u32, count: &dyn Fn(&str) -> u32) -> String {
    let total = count(text);
    if total <= max_tokens {
        return text.to_owned();
    }
    let mut len = ((text.len() as u64 * max_tokens as u64) / total.max(1) as u64) as usize;
    loop {
        while len > 0 && !text.is_char_boundary(len) {
            len -= 1;
        }
        let candidate = &text[..len];
        if len == 0 || count(candidate) <= max_tokens {
            return candidate.to_owned();
        }
        len = len * 9 / 10;
    }
}

pub fn plan(
    model: &ModelSpec,
    input: &PlanInput,
    count: &dyn Fn(&str) -> u32,
) -> Result<Plan, TooLarge> {
    let reserved = answer_reserve(model);
    let window = model.context_window;
    let system_tokens = if input.system_prompt.is_empty() {
        0
    } else {
        count(&input.system_prompt) + PER_MESSAGE_OVERHEAD
    };
    let current_tokens = count(&input.current_text) + PER_MESSAGE_OVERHEAD;
    let fixed = reserved + system_tokens + current_tokens + REPLY_PRIMING;
    if fixed > window {
        return Err(TooLarge {
            model: model.id.clone(),
            needed: current_tokens + system_tokens,
            available: window.saturating_sub(reserved + REPLY_PRIMING),
            window,
            reserved,
        });
    }
    let mut budget = window - fixed;
    let mut notes = Vec::new();
    let mut files_out = Vec::new();
    let mut current_parts = vec![Part::Text(input.current_text.clone())];
    let mut unseen_images = Vec::new();
    let mut attachment_tokens = 0;

    for file in &input.files {
        let mut cf = conv::ContextFile {
            file_id: file.file_id.clone(),
            filename: file.filename.clone(),
            ..Default::default()
        };
        if let Some(url) = &file.image {
            if !model.vision {
                unseen_images.push(file.filename.clone());
                notes.push(format!(
                    "image '{}' not shown: {} cannot see images",
                    file.filename, model.id
                ));
            } else if IMAGE_TOKENS <= budget {
                budget -= IMAGE_TOKENS;
                attachment_tokens += IMAGE_TOKENS;
                cf.sent_as_image = true;
                current_parts.push(Part::ImageUrl(url.clone()));
            } else {
                notes.push(format!(
                    "image '{}' left out: no room in the context window",
                    file.filename
                ));
            }
        }
        let mut left_out = Vec::new();
        let mut text = String::new();
        for part in &file.text_parts {
            let tokens = count(&part.text);
            let header = format!("\n\n## {}\n", part.label);
            let cost = tokens + count(&header);
            if cost <= budget {
                budget -= cost;
                attachment_tokens += cost;
                text.push_str(&header);
                text.push_str(&part.text);
                cf.parts.push(conv::ContextFilePart {
                    label: part.label.clone(),
                    tokens,
                    included: true,
                    truncated: false,
                });
            } else if left_out.is_empty() && budget >= MIN_PARTIAL_TOKENS + count(&header) {
                let room = budget - count(&header);
                let cut = truncate_to_tokens(&part.text, room, count);
                let used = count(&cut) + count(&header);
                budget = budget.saturating_sub(used);
                attachment_tokens += used;
                text.push_str(&header);
                text.push_str(&cut);
                cf.parts.push(conv::ContextFilePart {
                    label: part.label.clone(),
                    tokens: used,
                    included: true,
                    truncated: true,
                });
                notes.push(format!(
                    "'{}': {} cut to {} of {} tokens to fit the context window",
                    file.filename, part.label, used, tokens
                ));
                left_out.push(String::new()); // later parts are left out whole
            } else {
                left_out.push(part.label.clone());
                cf.parts.push(conv::ContextFilePart {
                    label: part.label.clone(),
                    tokens,
                    included: false,
                    truncated: false,
                });
            }
        }
        let omitted: Vec<&str> = left_out
            .iter()
            .filter(|l| !l.is_empty())
            .map(String::as_str)
            .collect();
        if !omitted.is_empty() {
            notes.push(format!(
                "'{}': {} left out (over the context budget)",
                file.filename,
                omitted.join(", ")
            ));
        }
        if !text.is_empty() {
            let mut block = format!("--- Attached file: {} ---", file.filename);
            block.push_str(&text);
            if !omitted.is_empty() || cf.parts.iter().any(|p| p.truncated) {
                block.push_str(&format!(
                    "\n\n[Note: parts of {} were left out to fit the context window: {}]",
                    file.filename,
                    if omitted.is_empty() {
                        "the end of the last included part".to_owned()
                    } else {
                        omitted.join(", ")
                    }
                ));
            }
            current_parts.push(Part::Text(block));
        }
        files_out.push(cf);
    }

    // Newest history that fits, kept contiguous.
    let mut kept = Vec::new();
    let mut history_tokens = 0;
    for m in input.history.iter().rev() {
        let cost = count(&m.text) + PER_MESSAGE_OVERHEAD;
        if cost > budget {
            break;
        }
        budget -= cost;
        history_tokens += cost;
        kept.push((m, cost));
    }
    kept.reverse();
    let omitted_messages = (input.history.len() - kept.len()) as u32;
    if omitted_messages > 0 {
        notes.push(format!(
            "{omitted_messages} older message(s) left out to fit the context window"
        ));
    }

    let mut messages = Vec::new();
    if !input.system_prompt.is_empty() {
        messages.push(PromptMessage::text(Role::System, &input.system_prompt));
    }
    let mut context_messages = Vec::new();
    for (m, cost) in &kept {
        messages.push(PromptMessage::text(m.role, &m.text));
        context_messages.push(conv::ContextMessage {
            message_id: m.id.clone(),
            role: proto_role(m.role) as i32,
            tokens: *cost,
        });
    }
    messages.push(PromptMessage {
        role: Role::User,
        parts: current_parts,
    });
    context_messages.push(conv::ContextMessage {
        message_id: input.current_id.clone(),
        role: conv::Role::User as i32,
        tokens: current_tokens + attachment_tokens,
    });

    let total = system_tokens + history_tokens + current_tokens + attachment_tokens + REPLY_PRIMING;
    Ok(Plan {
        context: conv::ContextPlan {
            model: model.id.clone(),
            context_window: window,
            reserved_for_answer: reserved,
            system_prompt_tokens: system_tokens,
            messages: context_messages,
            files: files_out,
            total_prompt_tokens: total,
            omitted_messages,
            notes,
        },
        messages,
        unseen_images,
        max_output_tokens: reserved,
    })
}

pub fn proto_role(role: Role) -> conv::Role {
    match role {
        Role::System => conv::Role::System,
        Role::User => conv::Role::User,
        Role::Assistant => conv::Role::Assistant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per whitespace-separated word: easy to reason about.
    fn words(s: &str) -> u32 {
        s.split_whitespace().count() as u32
    }

    fn model(window: u32, out: u32, vision: bool) -> ModelSpec {
        ModelSpec {
            id: "m".into(),
            display_name: "m".into(),
            provider: "openai",
            vision,
            context_window: window,
            max_output_tokens: out,
            embedded: false,
        }
    }

    fn hist(n: usize, words_each: usize) -> Vec<HistoryMessage> {
        (0..n)
            .map(|i| HistoryMessage {
                id: format!("h{i}"),
                role: if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                },
                text: "w ".repeat(words_each),
            })
            .collect()
    }

    fn input(history: Vec<HistoryMessage>, files: Vec<FileInput>) -> PlanInput {
        PlanInput {
            system_prompt: String::new(),
            history,
            current_id: "cur".into(),
            current_text: "question here".into(),
            files,
        }
    }

    #[test]
    fn keeps_the_newest_history_that_fits() {
        // window 1000, reserve 250, current 2+4, priming 3 → 741 left; each message 96+4.
        let p = plan(
            &model(1000, 250, false),
            &input(hist(10, 96), vec![]),
            &words,
        )
        .unwrap();
        let ids: Vec<_> = p
            .context
            .messages
            .iter()
            .map(|m| m.message_id.as_str())
            .collect();
        assert_eq!(ids, ["h3", "h4", "h5", "h6", "h7", "h8", "h9", "cur"]);
        assert_eq!(p.context.omitted_messages, 3);
        assert_eq!(p.messages.len(), 8);
        assert_eq!(p.context.reserved_for_answer, 250);
        assert_eq!(p.context.total_prompt_tokens, 7 * 100 + 6 + 3);
        assert!(p.context.total_prompt_tokens + 250 <= 1000);
        assert!(p.context.notes[0].contains("3 older message"));
    }

    #[test]
    fn everything_fits_in_a_large_window() {
        let p = plan(
            &model(128_000, 16_384, true),
            &input(hist(4, 10), vec![]),
            &words,
        )
        .unwrap();
        assert_eq!(p.context.omitted_messages, 0);
        assert_eq!(p.context.messages.len(), 5);
        assert!(p.context.notes.is_empty());
    }

    #[test]
    fn attachments_whole_then_truncated_then_left_out_with_notes() {
        let pages = (1..=5)
            .map(|i| TextPart {
                label: format!("Page {i}"),
                text: "x ".repeat(200),
            })
            .collect();
        let file = FileInput {
            file_id: "f1".into(),
            filename: "report.pdf".into(),
            text_parts: pages,
            image: None,
        };
        // window 1000 → 741 for attachments: pages 1-3 cost 202 each (606), page 4 cut to
        // the remaining 135, page 5 left out, and no room for history.
        let p = plan(
            &model(1000, 250, false),
            &input(hist(2, 10), vec![file]),
            &words,
        )
        .unwrap();
        let parts = &p.context.files[0].parts;
        assert_eq!(parts.len(), 5);
        assert!(parts[..3].iter().all(|x| x.included && !x.truncated));
        assert!(parts[3].included && parts[3].truncated);
        assert!(!parts[4].included);
        assert!(p.context.total_prompt_tokens + 250 <= 1000);
        assert!(
            p.context
                .notes
                .iter()
                .any(|n| n.contains("Page 5 left out"))
        );
        assert!(p.context.notes.iter().any(|n| n.contains("Page 4 cut")));
        assert_eq!(p.context.omitted_messages, 2);
        let user = p.messages.last().unwrap().joined_text();
        assert!(user.contains("--- Attached file: report.pdf ---"));
        assert!(user.contains("[Note: parts of report.pdf were left out"));
    }

    #[test]
    fn images_go_as_parts_to_vision_models_only() {
        let img = FileInput {
            file_id: "i1".into(),
            filename: "cat.png".into(),
            text_parts: vec![],
            image: Some("data:image/png;base64,AAAA".into()),
        };
        let p = plan(
            &model(128_000, 4096, true),
            &input(vec![], vec![img.clone()]),
            &words,
        )
        .unwrap();
        assert!(p.context.files[0].sent_as_image);
        assert!(
            p.messages
                .last()
                .unwrap()
                .parts
                .contains(&Part::ImageUrl("data:image/png;base64,AAAA".into()))
        );
        let p = plan(&model(8192, 512, false), &input(vec![], vec![img]), &words).unwrap();
        assert!(!p.context.files[0].sent_as_image);
        assert_eq!(p.unseen_images, ["cat.png"]);
        assert!(
            p.messages
                .iter()
                .all(|m| m.parts.iter().all(|x| matches!(x, Part::Text(_))))
        );
    }

    #[test]
    fn a_message_larger_than_the_window_is_refused() {
        let mut i = input(vec![], vec![]);
        i.current_text = "w ".repeat(900);
        let e = plan(&model(1000, 250, false), &i, &words).unwrap_err();
        assert_eq!(e.available, 747);
        assert!(e.to_string().contains("shorten it"));
    }

    #[test]
    fn truncation_respects_the_token_limit_and_char_boundaries() {
        let t = "héllo wörld ".repeat(50);
        let cut = truncate_to_tokens(&t, 10, &words);
        assert!(words(&cut) <= 10);
        assert!(t.starts_with(&cut));
        assert_eq!(truncate_to_tokens("a b", 10, &words), "a b");
    }
}
