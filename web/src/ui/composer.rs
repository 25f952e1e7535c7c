//! The composer: text (Enter sends), attachments by picker or drop with upload progress,
//! Send and Stop.

use confab_web_core::keys::{KeyAction, KeyPress, composer_key};
use confab_web_core::upload::{LocalKind, Phase};
use dioxus::html::HasFileData;
use dioxus::prelude::*;
use wasm_bindgen::JsCast;

use super::icons::{DocIcon, ImageIcon, PaperclipIcon};
use crate::actions;
use crate::api;
use crate::state::{AppState, Dialog, PendingFile};

const ACCEPT: &str = ".pdf,.docx,.xlsx,.csv,.tsv,.txt,.md,.json,.png,.jpg,.jpeg,.webp,.gif,text/*,image/png,image/jpeg,image/webp,image/gif,application/pdf";

#[component]
pub(super) fn Composer() -> Element {
    let mut s = use_context::<AppState>();
    let mut dragging = use_signal(|| false);
    let text = s.composer.read().clone();
    let pending = s.pending.read().clone();
    let streaming = s.running.read().is_some();
    let busy = pending.iter().any(|p| p.upload.is_busy());
    let can_send = !streaming
        && !busy
        && (!text.trim().is_empty() || pending.iter().any(|p| p.upload.is_ready()));
    let class = if dragging() {
        "composer dragging"
    } else {
        "composer"
    };
    rsx! {
        div {
            class: "{class}",
            "data-testid": "composer",
            ondragover: move |e: DragEvent| {
                e.prevent_default();
                dragging.set(true);
            },
            ondragleave: move |_| dragging.set(false),
            ondrop: move |e: DragEvent| {
                e.prevent_default();
                dragging.set(false);
                actions::add_files(s, e.files());
            },
            if !pending.is_empty() {
                div { class: "pending", "data-testid": "pending-attachments",
                    for p in pending {
                        PendingChip { key: "{p.local_id}", p: p.clone() }
                    }
                }
            }
            div { class: "composer-row",
                label { class: "icon attach", r#for: "file-input", title: "Attach files", "data-testid": "attach-button", PaperclipIcon {} }
                input {
                    id: "file-input",
                    class: "hidden",
                    "data-testid": "file-input",
                    r#type: "file",
                    multiple: true,
                    accept: ACCEPT,
                    onchange: move |e: FormEvent| {
                        actions::add_files(s, e.files());
                        if let Some(el) = api::element("file-input").and_then(|x| x.dyn_into::<web_sys::HtmlInputElement>().ok()) {
                            el.set_value("");
                        }
                    },
                }
                textarea {
                    id: "composer-input",
                    class: "composer-input",
                    "data-testid": "composer-input",
                    rows: 1,
                    placeholder: "Message Confab  (Enter to send, Shift+Enter for a new line)",
                    value: "{text}",
                    oninput: move |e: FormEvent| s.composer.set(e.value()),
                    onkeydown: move |e: KeyboardEvent| {
                        let key = e.key().to_string();
                        let m = e.modifiers();
                        let k = KeyPress {
                            key: &key,
                            shift: m.contains(Modifiers::SHIFT),
                            ctrl: m.contains(Modifiers::CONTROL),
                            meta: m.contains(Modifiers::META),
                            alt: m.contains(Modifiers::ALT),
                            composing: e.is_composing(),
                        };
                        match composer_key(k, s.is_streaming()) {
                            KeyAction::Send => {
                                e.prevent_default();
                                actions::send(s);
                            }
                            _ => {}
                        }
                    },
                }
                if streaming {
                    button { class: "btn stop", "data-testid": "stop-button", title: "Stop (Esc)", onclick: move |_| actions::stop(s), "■ Stop" }
                } else {
                    button {
                        class: "btn primary send",
                        "data-testid": "send-button",
                        disabled: !can_send,
                        onclick: move |_| actions::send(s),
                        "Send"
                    }
                }
            }
        }
    }
}

#[component]
fn PendingChip(p: PendingFile) -> Element {
    let mut s = use_context::<AppState>();
    let state = match &p.upload.phase {
        Phase::Queued => "queued",
        Phase::Uploading => "uploading",
        Phase::Processing => "processing",
        Phase::Ready => "ready",
        Phase::Failed(_) => "failed",
    };
    let pct = (p.upload.progress() * 100.0).round();
    let label = p.upload.status_label();
    let local_id = p.local_id;
    let file_id = p.upload.file_id.clone();
    let name = p.upload.name.clone();
    let is_image = p.upload.kind == LocalKind::Image;
    rsx! {
        div { class: "chip pending-chip {state}", "data-testid": "attachment-chip", "data-state": "{state}", "data-name": "{p.upload.name}",
            button {
                class: "chip-main",
                title: if file_id.is_some() { "What the model will see" } else { "" },
                onclick: move |_| {
                    if let Some(f) = file_id.clone() {
                        s.dialog.set(Some(Dialog::Extraction { file_id: f, name: name.clone() }));
                    }
                },
                if let (true, Some(url)) = (is_image, p.preview_url.clone()) {
                    img { class: "chip-thumb", "data-testid": "attachment-thumbnail", src: "{url}", alt: "{p.upload.name}" }
                } else {
                    span { class: "chip-icon", if is_image { ImageIcon {} } else { DocIcon {} } }
                }
                span { class: "chip-text",
                    span { class: "chip-name", "{p.upload.name}" }
                    span { class: "chip-status", "data-testid": "upload-status", "{label}" }
                }
            }
            if p.upload.is_busy() {
                div { class: "progress", "data-testid": "upload-progress", "data-progress": "{pct}",
                    div { class: "progress-bar", style: "width: {pct}%" }
                }
            }
            button {
                class: "icon",
                title: "Remove",
                "data-testid": "remove-attachment",
                onclick: move |_| s.pending.write().retain(|x| x.local_id != local_id),
                "✕"
            }
        }
    }
}
