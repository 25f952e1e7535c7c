//! The sidebar: new chat, search with highlighted snippets, the conversation list (pages
//! load on scroll; rename, pin, delete) and the quota.

use confab_proto::conversation::v1::{Conversation, SearchHit};
use confab_web_core::format::{compact, relative_time, seconds_until};
use confab_web_core::snippet::segments;
use dioxus::core::spawn_forever;
use dioxus::prelude::*;

use crate::actions;
use crate::api;
use crate::state::{AppState, Dialog};

#[component]
pub(super) fn Sidebar() -> Element {
    let s = use_context::<AppState>();
    let query = s.search_query.read().clone();
    let results = s.search_results.read().clone();
    let convs = s.conversations.read().clone();
    let current = s
        .current
        .read()
        .as_ref()
        .map(|c| c.id.clone())
        .unwrap_or_default();
    let has_more = s.next_page.read().is_some();
    let loading = (s.loading_conversations)();
    rsx! {
        aside { class: "sidebar", "data-testid": "sidebar",
            div { class: "sidebar-head",
                span { class: "brand", "Confab" }
                button {
                    class: "btn primary",
                    "data-testid": "new-chat",
                    onclick: move |_| actions::new_chat(s),
                    "+ New chat"
                }
            }
            input {
                id: "search-input",
                class: "search",
                "data-testid": "search-input",
                r#type: "search",
                placeholder: "Search chats  (Ctrl+K)",
                value: "{query}",
                oninput: move |e: FormEvent| actions::search_input(s, e.value()),
                onkeydown: move |e: KeyboardEvent| {
                    if e.key() == Key::Escape {
                        actions::search_input(s, String::new());
                    }
                },
            }
            if let Some(hits) = results {
                div { class: "search-results", "data-testid": "search-results",
                    if hits.is_empty() {
                        div { class: "muted pad", "data-testid": "search-empty", "No matches" }
                    }
                    for (i , h) in hits.into_iter().enumerate() {
                        SearchResult { key: "{i}", hit: h }
                    }
                }
            } else {
                div {
                    id: "conv-list",
                    class: "conv-list",
                    "data-testid": "conversation-list",
                    onscroll: move |_| {
                        if let Some(el) = api::element("conv-list")
                            && el.scroll_top() + el.client_height() >= el.scroll_height() - 80
                        {
                            spawn_forever(actions::load_conversations(s, false));
                        }
                    },
                    if convs.is_empty() && !loading {
                        div { class: "muted pad", "No conversations yet" }
                    }
                    for c in convs {
                        ConversationItem { key: "{c.id}", active: c.id == current, conv: c.clone() }
                    }
                    if has_more {
                        button {
                            class: "btn ghost load-more",
                            "data-testid": "load-more",
                            disabled: loading,
                            onclick: move |_| { spawn_forever(actions::load_conversations(s, false)); },
                            if loading { "Loading…" } else { "Load more" }
                        }
                    }
                }
            }
            QuotaIndicator {}
        }
    }
}

#[component]
fn SearchResult(hit: SearchHit) -> Element {
    let s = use_context::<AppState>();
    let conv = hit.conversation.clone().unwrap_or_default();
    let ranges: Vec<(u32, u32)> = hit.highlights.iter().map(|h| (h.start, h.end)).collect();
    let segs = segments(&hit.snippet, &ranges);
    let (cid, mid) = (conv.id.clone(), hit.message_id.clone());
    let title = if conv.title.is_empty() {
        "Untitled".to_string()
    } else {
        conv.title.clone()
    };
    rsx! {
        button {
            class: "search-hit",
            "data-testid": "search-result",
            "data-message-id": "{hit.message_id}",
            onclick: move |_| {
                let (c, m) = (cid.clone(), mid.clone());
                spawn_forever(actions::open_search_hit(s, c, m));
            },
            div { class: "hit-title", "{title}" }
            div { class: "hit-snippet", "data-testid": "search-snippet",
                for (i , seg) in segs.into_iter().enumerate() {
                    if seg.highlighted {
                        mark { key: "{i}", "{seg.text}" }
                    } else {
                        span { key: "{i}", "{seg.text}" }
                    }
                }
            }
        }
    }
}

#[component]
fn ConversationItem(conv: Conversation, active: bool) -> Element {
    let mut s = use_context::<AppState>();
    let mut renaming = use_signal(|| None::<String>);
    let title = if conv.title.is_empty() {
        "New chat".to_string()
    } else {
        conv.title.clone()
    };
    let class = if active {
        "conv-item active"
    } else {
        "conv-item"
    };
    let id = conv.id.clone();
    let pinned = conv.pinned;
    let now = api::now_ms();
    let when = relative_time(conv.updated_at_ms, now);
    let (id1, id2, id3, id4) = (id.clone(), id.clone(), id.clone(), id.clone());
    let conv_for_delete = conv.clone();
    rsx! {
        div { class: "{class}", "data-testid": "conversation-item", "data-id": "{id}", "data-pinned": "{pinned}",
            if let Some(v) = renaming() {
                input {
                    class: "rename-input",
                    "data-testid": "rename-input",
                    value: "{v}",
                    autofocus: true,
                    oninput: move |e: FormEvent| renaming.set(Some(e.value())),
                    onkeydown: move |e: KeyboardEvent| {
                        match e.key() {
                            Key::Enter => save_rename(s, renaming, id1.clone()),
                            Key::Escape => renaming.set(None),
                            _ => {}
                        }
                    },
                    onblur: move |_| {
                        if renaming.peek().is_some() {
                            save_rename(s, renaming, id2.clone())
                        }
                    },
                }
            } else {
                button {
                    class: "conv-title",
                    "data-testid": "conversation-title",
                    title: "{title}",
                    onclick: move |_| {
                        s.focus_message.set(None);
                        spawn_forever(actions::open_conversation(s, id3.clone()));
                    },
                    if pinned {
                        span { class: "pin", "★ " }
                    }
                    span { class: "t", "{title}" }
                    span { class: "when", "{when}" }
                }
                div { class: "conv-actions",
                    button {
                        class: "icon",
                        title: if pinned { "Unpin" } else { "Pin" },
                        "data-testid": "pin-conversation",
                        onclick: move |_| { spawn_forever(actions::set_pinned(s, id4.clone(), !pinned)); },
                        if pinned { "★" } else { "☆" }
                    }
                    button {
                        class: "icon",
                        title: "Rename",
                        "data-testid": "rename-conversation",
                        onclick: move |_| renaming.set(Some(title.clone())),
                        "✎"
                    }
                    button {
                        class: "icon danger",
                        title: "Delete",
                        "data-testid": "delete-conversation",
                        onclick: move |_| s.dialog.set(Some(Dialog::ConfirmDelete(conv_for_delete.clone()))),
                        "✕"
                    }
                }
            }
        }
    }
}

fn save_rename(s: AppState, mut renaming: Signal<Option<String>>, id: String) {
    let t = renaming.peek().clone().unwrap_or_default();
    renaming.set(None);
    if !t.trim().is_empty() {
        spawn_forever(actions::rename(s, id, t.trim().to_string()));
    }
}

#[component]
fn QuotaIndicator() -> Element {
    let s = use_context::<AppState>();
    let Some(q) = s.quota.read().clone() else {
        return rsx! { div { class: "quota muted", "data-testid": "quota", "Quota: …" } };
    };
    let now = api::now_ms();
    let tokens_pct = if q.daily_token_budget == 0 {
        0.0
    } else {
        q.tokens_remaining as f64 * 100.0 / q.daily_token_budget as f64
    };
    let low = q.requests_remaining == 0;
    let wait = seconds_until(q.requests_reset_at_ms, now);
    rsx! {
        div { class: "quota", "data-testid": "quota",
            div { class: "quota-line", "data-testid": "quota-requests",
                "Requests: {q.requests_remaining}/{q.requests_per_minute_limit} this minute"
                if low && wait > 0 {
                    span { class: "warn", " · next in {wait} s" }
                }
            }
            div { class: "quota-line", "data-testid": "quota-tokens",
                "Tokens today: {compact(q.tokens_remaining)} of {compact(q.daily_token_budget)} left"
            }
            div { class: "meter",
                div { class: "meter-bar", style: "width: {tokens_pct:.0}%" }
            }
        }
    }
}
