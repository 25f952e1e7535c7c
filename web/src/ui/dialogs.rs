//! The dialogs over the chat, one at a time (`AppState::dialog`): confirm delete, the
//! system prompt, and "what the model saw" for a file.

use confab_proto::conversation::v1::{Conversation, UpdateConversationRequest};
use confab_web_core::markdown;
use dioxus::core::spawn_forever;
use dioxus::prelude::*;

use crate::actions;
use crate::state::{AppState, Dialog};

#[component]
pub(super) fn Dialogs() -> Element {
    let s = use_context::<AppState>();
    let Some(dialog) = s.dialog.read().clone() else {
        return rsx! {};
    };
    match dialog {
        Dialog::ConfirmDelete(c) => rsx! {
            ConfirmDelete { conv: c }
        },
        Dialog::Extraction { file_id, name } => rsx! {
            ExtractionViewer { key: "{file_id}", file_id: file_id.clone(), name }
        },
        Dialog::SystemPrompt => rsx! {
            SystemPromptDialog {}
        },
    }
}

fn close(mut s: AppState) {
    s.dialog.set(None);
}

#[component]
fn ConfirmDelete(conv: Conversation) -> Element {
    let s = use_context::<AppState>();
    rsx! {
        div { class: "modal-backdrop",
            div { class: "modal", "data-testid": "confirm-dialog", role: "dialog",
                h3 { "Delete this chat?" }
                p { "“{conv.title}” and its messages will be deleted. This can't be undone." }
                div { class: "row end",
                    button { class: "btn ghost", "data-testid": "cancel-delete", onclick: move |_| close(s), "Cancel" }
                    button {
                        class: "btn danger",
                        "data-testid": "confirm-delete",
                        onclick: move |_| {
                            close(s);
                            spawn_forever(actions::delete(s, conv.id.clone()));
                        },
                        "Delete"
                    }
                }
            }
        }
    }
}

#[component]
fn SystemPromptDialog() -> Element {
    let mut s = use_context::<AppState>();
    let initial = s
        .current
        .peek()
        .as_ref()
        .map(|c| c.system_prompt.clone())
        .unwrap_or_else(|| s.draft_system_prompt.peek().clone());
    let mut text = use_signal(|| initial);
    rsx! {
        div { class: "modal-backdrop",
            div { class: "modal", "data-testid": "system-prompt-dialog", role: "dialog",
                h3 { "System prompt" }
                p { class: "muted", "Instructions the model follows for this conversation." }
                textarea {
                    class: "prompt-input",
                    "data-testid": "system-prompt-input",
                    rows: 6,
                    value: "{text}",
                    oninput: move |e: FormEvent| text.set(e.value()),
                }
                div { class: "row end",
                    button { class: "btn ghost", onclick: move |_| close(s), "Cancel" }
                    button {
                        class: "btn primary",
                        "data-testid": "system-prompt-save",
                        onclick: move |_| {
                            let t = text.peek().clone();
                            close(s);
                            let cid = s.current_id();
                            if cid.is_empty() {
                                s.draft_system_prompt.set(t);
                            } else {
                                spawn_forever(actions::update_conversation(s, UpdateConversationRequest {
                                    conversation_id: cid,
                                    system_prompt: Some(t),
                                    ..Default::default()
                                }));
                            }
                        },
                        "Save"
                    }
                }
            }
        }
    }
}

#[component]
fn ExtractionViewer(file_id: String, name: String) -> Element {
    let s = use_context::<AppState>();
    let fid = file_id.clone();
    let extraction = use_resource(move || actions::load_extraction(fid.clone()));
    let thumb = s
        .thumbnails
        .read()
        .get(&file_id)
        .cloned()
        .unwrap_or_default();
    let body = match &*extraction.read() {
        None => rsx! { div { class: "muted", "Loading…" } },
        Some(Err(e)) => rsx! { div { class: "msg-error", "{e.text}" } },
        Some(Ok(x)) => {
            let parts = x.parts.clone();
            let warnings = x.warnings.clone();
            rsx! {
                div { class: "muted", "{parts.len()} part(s) · {x.total_tokens} tokens" }
                for w in warnings {
                    div { class: "note", "{w}" }
                }
                if parts.is_empty() && !thumb.is_empty() {
                    img { class: "viewer-image", src: "{thumb}", alt: "{name}" }
                    p { class: "muted", "Sent to vision models as an image." }
                }
                for p in parts {
                    section { class: "part", "data-testid": "extraction-part", key: "{p.index}-{p.label}",
                        h4 { "{p.label} " span { class: "muted", "· {p.token_count} tokens" } }
                        if let Some(sh) = p.sheet.clone().filter(|sh| !sh.omitted_note.is_empty()) {
                            div { class: "note", "{sh.omitted_note}" }
                        }
                        div { class: "markdown", dangerous_inner_html: "{markdown::render(&p.text)}" }
                    }
                }
            }
        }
    };
    rsx! {
        div { class: "modal-backdrop", onclick: move |_| close(s),
            div {
                class: "modal wide",
                "data-testid": "extraction-viewer",
                role: "dialog",
                onclick: move |e: MouseEvent| e.stop_propagation(),
                div { class: "row",
                    h3 { class: "grow", "What the model saw — {name}" }
                    button { class: "icon", "data-testid": "close-viewer", onclick: move |_| close(s), "✕" }
                }
                div { class: "viewer-body", {body} }
            }
        }
    }
}
