//! The messages: the thread with auto-scroll and search-hit focus, each message (edit,
//! copy, regenerate, retry, context plan), sent attachments and the error banner.

use confab_proto::conversation::v1::{Attachment, ContextPlan};
use confab_web_core::format::human_bytes;
use confab_web_core::markdown;
use confab_web_core::thread::MessageKind;
use dioxus::core::spawn_forever;
use dioxus::prelude::*;

use super::icons::{CopyIcon, DocIcon, ImageIcon};
use crate::actions;
use crate::api;
use crate::state::{AppState, Dialog, UiMessage, UiStatus};

#[component]
pub(super) fn MessageList() -> Element {
    let mut s = use_context::<AppState>();
    let msgs = s.messages.read().clone();
    let streaming = s.running.read().is_some();
    let following = s.scroll.read().should_follow();
    let loading = (s.loading_messages)();
    // Follow the stream (unless the user scrolled up) and open a search hit's message.
    use_effect(move || {
        let _ = s.messages.read();
        let focus = s.focus_message.read().clone();
        spawn_forever(async move {
            api::sleep_ms(0).await;
            let Some(list) = api::element("messages") else {
                return;
            };
            if let Some(mid) = focus {
                if let Some(el) = api::element(&format!("msg-{mid}")) {
                    el.scroll_into_view_with_bool(true);
                    let _ = el.class_list().add_1("flash");
                    s.scroll.write().on_scroll(
                        list.scroll_top() as f64,
                        list.scroll_height() as f64,
                        list.client_height() as f64,
                    );
                    s.focus_message.set(None);
                }
                return;
            }
            if s.scroll.peek().should_follow() {
                list.set_scroll_top(list.scroll_height());
            }
        });
    });
    let last_idx = msgs.len().saturating_sub(1);
    rsx! {
        div {
            id: "messages",
            class: "messages",
            "data-testid": "messages",
            onscroll: move |_| {
                if let Some(el) = api::element("messages") {
                    s.scroll.write().on_scroll(el.scroll_top() as f64, el.scroll_height() as f64, el.client_height() as f64);
                }
            },
            if msgs.is_empty() && !loading {
                div { class: "empty", "data-testid": "empty-state",
                    h2 { "What can I help with?" }
                    p { class: "muted", "Attach PDFs, Word and Excel files or images — drop them anywhere on the composer." }
                }
            }
            if loading {
                div { class: "muted pad", "Loading…" }
            }
            div { class: "thread",
                for (i , m) in msgs.into_iter().enumerate() {
                    MessageView { key: "{m.kind.key()}", is_last: i == last_idx, streaming, msg: m }
                }
            }
        }
        if streaming && !following {
            button {
                class: "jump",
                "data-testid": "jump-to-latest",
                onclick: move |_| {
                    s.scroll.write().resume();
                    if let Some(el) = api::element("messages") {
                        el.set_scroll_top(el.scroll_height());
                    }
                },
                "↓ Latest"
            }
        }
    }
}

#[component]
fn MessageView(msg: UiMessage, is_last: bool, streaming: bool) -> Element {
    let s = use_context::<AppState>();
    let mut editing = use_signal(|| None::<String>);
    let mut copied = use_signal(|| false);
    let role = if msg.is_user { "user" } else { "assistant" };
    let status = match &msg.status {
        UiStatus::Streaming => "streaming",
        UiStatus::Complete => "complete",
        UiStatus::Stopped => "stopped",
        UiStatus::Failed { .. } => "failed",
    };
    let html = if msg.is_user {
        String::new()
    } else {
        markdown::render(&msg.content)
    };
    let content = msg.content.clone();
    let key = msg.kind.key();
    // Only a stored message can be edited: the server resends from its id.
    let mid = msg.kind.stored_id().unwrap_or_default().to_string();
    let can_edit = msg.is_user && !streaming && matches!(msg.kind, MessageKind::Stored(_));
    let can_regenerate = !msg.is_user && is_last && !streaming;
    rsx! {
        div {
            id: "msg-{key}",
            class: "msg {role}",
            "data-testid": "message",
            "data-role": "{role}",
            "data-status": "{status}",
            if !msg.attachments.is_empty() {
                div { class: "attachments",
                    for a in msg.attachments.clone() {
                        SentAttachment { key: "{a.file_id}", att: a }
                    }
                }
            }
            if let Some(text) = editing() {
                div { class: "edit",
                    textarea {
                        class: "edit-input",
                        "data-testid": "edit-input",
                        value: "{text}",
                        rows: 4,
                        oninput: move |e: FormEvent| editing.set(Some(e.value())),
                    }
                    div { class: "row",
                        button {
                            class: "btn primary small",
                            "data-testid": "edit-save",
                            onclick: move |_| {
                                let t = editing.peek().clone().unwrap_or_default();
                                editing.set(None);
                                actions::edit_and_resend(s, mid.clone(), t);
                            },
                            "Save & send"
                        }
                        button { class: "btn ghost small", onclick: move |_| editing.set(None), "Cancel" }
                    }
                }
            } else if msg.is_user {
                div { class: "bubble", "data-testid": "message-content", "{msg.content}" }
            } else {
                div { class: "answer",
                    div { class: "markdown", "data-testid": "message-content", dangerous_inner_html: "{html}" }
                    if msg.status == UiStatus::Streaming {
                        span { class: "cursor", "data-testid": "streaming-indicator" }
                    }
                }
            }
            if msg.status == UiStatus::Stopped {
                div { class: "note", "data-testid": "stopped-note", "Stopped" }
            }
            if let UiStatus::Failed { text, retryable } = msg.status.clone() {
                div { class: "msg-error", "data-testid": "message-error",
                    span { "{text}" }
                    if retryable && is_last && !streaming {
                        button { class: "btn small", "data-testid": "retry", onclick: move |_| actions::regenerate(s), "Retry" }
                    }
                }
            }
            if editing.read().is_none() && msg.status != UiStatus::Streaming {
                div { class: "msg-actions",
                    if msg.embedded {
                        span { class: "badge embedded", "data-testid": "embedded-badge", title: "Answered by the small model running inside Confab", "embedded model" }
                    } else if !msg.is_user && !msg.model.is_empty() {
                        span { class: "model-name", "{msg.model}" }
                    }
                    button {
                        class: "icon",
                        title: "Copy",
                        "data-testid": "copy-message",
                        onclick: move |_| {
                            api::copy_text(&content);
                            copied.set(true);
                        },
                        if copied() { "✓" } else { CopyIcon {} }
                    }
                    if can_edit {
                        button { class: "icon", title: "Edit", "data-testid": "edit-message", onclick: move |_| editing.set(Some(msg.content.clone())), "✎" }
                    }
                    if can_regenerate {
                        button { class: "icon", title: "Regenerate", "data-testid": "regenerate", onclick: move |_| actions::regenerate(s), "↻" }
                    }
                    if let Some(ctx) = msg.context.clone() {
                        ContextPlanView { ctx }
                    }
                }
            }
        }
    }
}

/// What the model was given for an answer (tokens, messages, files, notes).
#[component]
fn ContextPlanView(ctx: ContextPlan) -> Element {
    rsx! {
        details { class: "context", "data-testid": "context-plan",
            summary { "context · {ctx.total_prompt_tokens} tokens" }
            div { class: "muted", "{ctx.model} · window {ctx.context_window} · {ctx.messages.len()} messages" }
            if ctx.omitted_messages > 0 {
                div { class: "muted", "{ctx.omitted_messages} older messages left out" }
            }
            for f in ctx.files.clone() {
                div { class: "muted", key: "{f.file_id}",
                    "{f.filename}: "
                    if f.sent_as_image { "sent as image" } else { "{f.parts.iter().filter(|p| p.included).count()}/{f.parts.len()} parts" }
                }
            }
            for (i , n) in ctx.notes.clone().into_iter().enumerate() {
                div { class: "muted", key: "{i}", "{n}" }
            }
        }
    }
}

#[component]
fn SentAttachment(att: Attachment) -> Element {
    let mut s = use_context::<AppState>();
    let fid = att.file_id.clone();
    if att.is_image {
        use_hook({
            let fid = fid.clone();
            move || {
                spawn_forever(actions::load_thumbnail(s, fid));
            }
        });
        let url = s.thumbnails.read().get(&fid).cloned().unwrap_or_default();
        let name = att.filename.clone();
        return rsx! {
            button {
                class: "thumb",
                "data-testid": "message-thumbnail",
                title: "{att.filename}",
                onclick: move |_| s.dialog.set(Some(Dialog::Extraction { file_id: fid.clone(), name: name.clone() })),
                if !url.is_empty() {
                    img { src: "{url}", alt: "{att.filename}" }
                } else {
                    span { class: "muted", ImageIcon {} }
                }
            }
        };
    }
    let name = att.filename.clone();
    rsx! {
        button {
            class: "chip",
            "data-testid": "message-attachment",
            title: "What the model saw",
            onclick: move |_| s.dialog.set(Some(Dialog::Extraction { file_id: fid.clone(), name: name.clone() })),
            span { class: "chip-icon", DocIcon {} }
            span { class: "chip-name", "{att.filename}" }
            span { class: "muted", " {human_bytes(att.size_bytes)}" }
        }
    }
}

#[component]
pub(super) fn ErrorBanner() -> Element {
    let mut s = use_context::<AppState>();
    let Some(e) = s.error.read().clone() else {
        return rsx! {};
    };
    rsx! {
        div { class: "error-banner", "data-testid": "error-banner", role: "alert",
            span { "{e.text}" }
            button { class: "icon", title: "Dismiss", "data-testid": "dismiss-error", onclick: move |_| s.error.set(None), "✕" }
        }
    }
}
