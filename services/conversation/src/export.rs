//! Export of one conversation (its current, non-superseded messages) as Markdown or JSON.

use confab_proto::conversation::v1::{
    Conversation, ExportConversationResponse, ExportFormat, Message, MessageStatus, Role,
};
use serde_json::json;

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::User) => "user",
        Ok(Role::Assistant) => "assistant",
        Ok(Role::System) => "system",
        _ => "unknown",
    }
}

fn status_name(status: i32) -> &'static str {
    match MessageStatus::try_from(status) {
        Ok(MessageStatus::Streaming) => "streaming",
        Ok(MessageStatus::Complete) => "complete",
        Ok(MessageStatus::Stopped) => "stopped",
        Ok(MessageStatus::Failed) => "failed",
        _ => "unknown",
    }
}

/// A file name from the title: letters, digits and dashes, at most 60 characters.
fn file_stem(c: &Conversation) -> String {
    let mut stem = String::new();
    for ch in c.title.chars() {
        if ch.is_alphanumeric() {
            stem.extend(ch.to_lowercase());
        } else if !stem.ends_with('-') && !stem.is_empty() {
            stem.push('-');
        }
        if stem.chars().count() >= 60 {
            break;
        }
    }
    let stem = stem.trim_end_matches('-').to_owned();
    if stem.is_empty() {
        format!("conversation-{}", &c.id[..8.min(c.id.len())])
    } else {
        stem
    }
}

fn title(c: &Conversation) -> &str {
    if c.title.trim().is_empty() {
        "Untitled conversation"
    } else {
        &c.title
    }
}

pub fn markdown(c: &Conversation, messages: &[Message]) -> String {
    let mut out = format!("# {}\n\n", title(c));
    out.push_str(&format!("- Created: {}\n", rfc3339(c.created_at_ms)));
    out.push_str(&format!("- Updated: {}\n", rfc3339(c.updated_at_ms)));
    if !c.model.is_empty() {
        out.push_str(&format!("- Model: {}\n", c.model));
    }
    if !c.system_prompt.is_empty() {
        out.push_str("\n**System prompt**\n\n");
        for line in c.system_prompt.lines() {
            out.push_str(&format!("> {line}\n"));
        }
    }
    for m in messages {
        let heading = match Role::try_from(m.role) {
            Ok(Role::User) => "User".to_owned(),
            Ok(Role::Assistant) if !m.model.is_empty() => format!("Assistant ({})", m.model),
            Ok(Role::Assistant) => "Assistant".to_owned(),
            Ok(Role::System) => "System".to_owned(),
            _ => "Message".to_owned(),
        };
        out.push_str(&format!("\n## {heading}\n\n_{}_", rfc3339(m.created_at_ms)));
        if m.status != MessageStatus::Complete as i32 {
            out.push_str(&format!(" · {}", status_name(m.status)));
        }
        out.push_str("\n\n");
        out.push_str(m.content.trim_end());
        out.push('\n');
        if !m.error_message.is_empty() {
            out.push_str(&format!("\n> Error: {}\n", m.error_message));
        }
        if !m.attachments.is_empty() {
            out.push_str("\nAttachments:\n");
            for a in &m.attachments {
                out.push_str(&format!(
                    "- {} ({}, {} bytes)\n",
                    a.filename, a.mime_type, a.size_bytes
                ));
            }
        }
    }
    out
}

pub fn json(c: &Conversation, messages: &[Message]) -> serde_json::Value {
    json!({
        "id": c.id,
        "title": c.title,
        "model": c.model,
        "system_prompt": c.system_prompt,
        "pinned": c.pinned,
        "created_at": rfc3339(c.created_at_ms),
        "updated_at": rfc3339(c.updated_at_ms),
        "messages": messages.iter().map(|m| json!({
            "id": m.id,
            "role": role_name(m.role),
            "content": m.content,
            "status": status_name(m.status),
            "model": m.model,
            "created_at": rfc3339(m.created_at_ms),
            "updated_at": rfc3339(m.updated_at_ms),
            "parent_id": m.parent_id,
            "error_message": m.error_message,
            "usage": m.usage.as_ref().map(|u| json!({
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
            })),
            "attachments": m.attachments.iter().map(|a| json!({
                "file_id": a.file_id,
                "filename": a.filename,
                "mime_type": a.mime_type,
                "size_bytes": a.size_bytes,
                "is_image": a.is_image,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub fn export(
    c: &Conversation,
    messages: &[Message],
    format: ExportFormat,
) -> ExportConversationResponse {
    let stem = file_stem(c);
    match format {
        ExportFormat::Json => ExportConversationResponse {
            filename: format!("{stem}.json"),
            mime_type: "application/json".into(),
            content: serde_json::to_vec_pretty(&json(c, messages)).unwrap_or_default(),
        },
        _ => ExportConversationResponse {
            filename: format!("{stem}.md"),
            mime_type: "text/markdown; charset=utf-8".into(),
            content: markdown(c, messages).into_bytes(),
        },
    }
}
