//! The chat header: title, drawer toggle (phones), model picker and system prompt button.

use confab_proto::conversation::v1::UpdateConversationRequest;
use dioxus::core::spawn_forever;
use dioxus::prelude::*;

use crate::actions;
use crate::state::{AppState, Dialog};

#[component]
pub(super) fn ChatHeader() -> Element {
    let mut s = use_context::<AppState>();
    let title = s
        .current
        .read()
        .as_ref()
        .map(|c| {
            if c.title.is_empty() {
                "New chat".to_string()
            } else {
                c.title.clone()
            }
        })
        .unwrap_or_else(|| "New chat".into());
    let models = s.models.read().clone();
    let selected = s.selected_model.read().clone();
    let embedded = s.selected_model_info().is_some_and(|m| m.embedded);
    let has_prompt = s
        .current
        .read()
        .as_ref()
        .map(|c| !c.system_prompt.is_empty())
        .unwrap_or_else(|| !s.draft_system_prompt.read().is_empty());
    rsx! {
        header { class: "chat-head",
            button {
                class: "icon drawer-toggle",
                "data-testid": "drawer-toggle",
                title: "Conversations",
                onclick: move |_| {
                    let open = !*s.drawer_open.peek();
                    s.drawer_open.set(open);
                },
                "☰"
            }
            h1 { class: "chat-title", "data-testid": "chat-title", "{title}" }
            div { class: "head-tools",
                if !models.is_empty() {
                select {
                    class: "model-picker",
                    "data-testid": "model-picker",
                    value: "{selected}",
                    onchange: move |e: FormEvent| {
                        let m = e.value();
                        s.selected_model.set(m.clone());
                        let cid = s.current_id();
                        if !cid.is_empty() {
                            spawn_forever(actions::update_conversation(s, UpdateConversationRequest {
                                conversation_id: cid,
                                model: Some(m),
                                ..Default::default()
                            }));
                        }
                    },
                    for m in models {
                        option { key: "{m.id}", value: "{m.id}", selected: m.id == selected,
                            if m.embedded { "{m.display_name} · embedded" } else if m.display_name.is_empty() { "{m.id}" } else { "{m.display_name}" }
                        }
                    }
                }
                }
                if embedded {
                    span { class: "badge embedded", "data-testid": "model-embedded-badge", title: "Runs inside Confab on the server's CPU", "embedded model" }
                }
                button {
                    class: if has_prompt { "btn ghost small on" } else { "btn ghost small" },
                    "data-testid": "system-prompt-button",
                    title: "System prompt for this conversation",
                    onclick: move |_| s.dialog.set(Some(Dialog::SystemPrompt)),
                    "System prompt"
                }
            }
        }
    }
}
