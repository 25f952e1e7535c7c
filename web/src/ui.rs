//! The components. Stable `data-testid` attributes are what the browser tests use.

use confab_proto::conversation::v1::{Attachment, Conversation, SearchHit};
use confab_web_core::format::{compact, human_bytes, relative_time, seconds_until};
use confab_web_core::keys::{KeyAction, KeyPress, composer_key, global_key};
use confab_web_core::markdown;
use confab_web_core::snippet::segments;
use confab_web_core::upload::{LocalKind, Phase};
use dioxus::html::HasFileData;
use dioxus::core::spawn_forever;
use dioxus::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::actions;
use crate::api;
use crate::state::{AppState, PendingFile, UiMessage, UiStatus};

const ACCEPT: &str = ".pdf,.docx,.xlsx,.csv,.tsv,.txt,.md,.json,.png,.jpg,.jpeg,.webp,.gif,text/*,image/png,image/jpeg,image/webp,image/gif,application/pdf";

fn doc() -> Option<web_sys::Document> {
    web_sys::window()?.document()
}

/// Page-wide keys (Esc stops, Ctrl/Cmd+K focuses search) and the copy buttons inside
/// rendered Markdown, which is injected HTML and so has no Dioxus handlers.
fn install_document_listeners() {
    let Some(d) = doc() else { return };
    let keys = Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(move |e: web_sys::KeyboardEvent| {
        let Some(d) = doc() else { return };
        let stop = d.query_selector("[data-testid=stop-button]").ok().flatten();
        let key = e.key();
        let k = KeyPress { key: &key, shift: e.shift_key(), ctrl: e.ctrl_key(), meta: e.meta_key(), alt: e.alt_key(), composing: e.is_composing() };
        match global_key(k, stop.is_some()) {
            KeyAction::FocusSearch => {
                e.prevent_default();
                if let Some(el) = d.get_element_by_id("search-input").and_then(|x| x.dyn_into::<web_sys::HtmlElement>().ok()) {
                    // On a phone the search box lives in the closed drawer: open it first.
                    let narrow = web_sys::window().and_then(|w| w.inner_width().ok()).and_then(|v| v.as_f64()).is_some_and(|w| w <= 700.0);
                    let open = d.get_element_by_id("app").is_some_and(|a| a.class_list().contains("drawer-open"));
                    if narrow && !open
                        && let Some(b) = d.query_selector("[data-testid=drawer-toggle]").ok().flatten().and_then(|x| x.dyn_into::<web_sys::HtmlElement>().ok())
                    {
                        b.click();
                    }
                    let _ = el.focus();
                }
            }
            KeyAction::Stop => {
                if let Some(b) = stop.and_then(|x| x.dyn_into::<web_sys::HtmlElement>().ok()) {
                    e.prevent_default();
                    b.click();
                }
            }
            _ => {}
        }
    });
    let _ = d.add_event_listener_with_callback("keydown", keys.as_ref().unchecked_ref());
    keys.forget();
    let clicks = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
        let Some(t) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else { return };
        let Ok(Some(btn)) = t.closest(".copy-code") else { return };
        let Ok(Some(block)) = btn.closest(".code-block") else { return };
        if let Ok(Some(code)) = block.query_selector("code") {
            api::copy_text(&code.text_content().unwrap_or_default());
            btn.set_text_content(Some("Copied"));
        }
    });
    let _ = d.add_event_listener_with_callback("click", clicks.as_ref().unchecked_ref());
    clicks.forget();
}

#[component]
pub fn App() -> Element {
    let s = use_context_provider(AppState::new);
    use_hook(move || {
        install_document_listeners();
        spawn_forever(actions::bootstrap(s));
    });
    let drawer = if (s.drawer_open)() { "app drawer-open" } else { "app" };
    rsx! {
        div { id: "app", class: "{drawer}",
            Sidebar {}
            div {
                class: "drawer-backdrop",
                "data-testid": "drawer-backdrop",
                onclick: move |_| close_drawer(s),
            }
            main { class: "chat", "data-testid": "chat",
                ChatHeader {}
                MessageList {}
                ErrorBanner {}
                Composer {}
            }
            Modals {}
        }
    }
}

fn close_drawer(mut s: AppState) {
    s.drawer_open.set(false);
}

// ---------------- sidebar ----------------

#[component]
fn Sidebar() -> Element {
    let s = use_context::<AppState>();
    let query = s.search_query.read().clone();
    let results = s.search_results.read().clone();
    let convs = s.conversations.read().clone();
    let current = s.current.read().as_ref().map(|c| c.id.clone()).unwrap_or_default();
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
    let title = if conv.title.is_empty() { "Untitled".to_string() } else { conv.title.clone() };
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
    let title = if conv.title.is_empty() { "New chat".to_string() } else { conv.title.clone() };
    let class = if active { "conv-item active" } else { "conv-item" };
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
                        onclick: move |_| s.confirm_delete.set(Some(conv_for_delete.clone())),
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
    let tokens_pct = if q.daily_token_budget == 0 { 0.0 } else { q.tokens_remaining as f64 * 100.0 / q.daily_token_budget as f64 };
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

// ---------------- header ----------------

#[component]
fn ChatHeader() -> Element {
    let mut s = use_context::<AppState>();
    let title = s.current.read().as_ref().map(|c| if c.title.is_empty() { "New chat".to_string() } else { c.title.clone() }).unwrap_or_else(|| "New chat".into());
    let models = s.models.read().clone();
    let selected = s.selected_model.read().clone();
    let embedded = s.selected_model_info().is_some_and(|m| m.embedded);
    let has_prompt = s.current.read().as_ref().map(|c| !c.system_prompt.is_empty()).unwrap_or_else(|| !s.draft_system_prompt.read().is_empty());
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
                            spawn_forever(actions::update_conversation(s, confab_proto::conversation::v1::UpdateConversationRequest {
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
                    onclick: move |_| s.show_system_prompt.set(true),
                    "System prompt"
                }
            }
        }
    }
}

// ---------------- messages ----------------

#[component]
fn MessageList() -> Element {
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
            let Some(list) = api::element("messages") else { return };
            if let Some(mid) = focus {
                if let Some(el) = api::element(&format!("msg-{mid}")) {
                    el.scroll_into_view_with_bool(true);
                    let _ = el.class_list().add_1("flash");
                    s.scroll.write().on_scroll(list.scroll_top() as f64, list.scroll_height() as f64, list.client_height() as f64);
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
                    MessageView { key: "{m.id}", is_last: i == last_idx, streaming, msg: m }
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
    let html = if msg.is_user { String::new() } else { markdown::render(&msg.content) };
    let content = msg.content.clone();
    let mid = msg.id.clone();
    let can_edit = msg.is_user && !streaming && !msg.id.starts_with("local-");
    let can_regenerate = !msg.is_user && is_last && !streaming;
    rsx! {
        div {
            id: "msg-{msg.id}",
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
                onclick: move |_| s.viewer.set(Some((fid.clone(), name.clone()))),
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
            onclick: move |_| s.viewer.set(Some((fid.clone(), name.clone()))),
            span { class: "chip-icon", DocIcon {} }
            span { class: "chip-name", "{att.filename}" }
            span { class: "muted", " {human_bytes(att.size_bytes)}" }
        }
    }
}

#[component]
fn ErrorBanner() -> Element {
    let mut s = use_context::<AppState>();
    let Some(e) = s.error.read().clone() else { return rsx! {} };
    rsx! {
        div { class: "error-banner", "data-testid": "error-banner", role: "alert",
            span { "{e.text}" }
            button { class: "icon", title: "Dismiss", "data-testid": "dismiss-error", onclick: move |_| s.error.set(None), "✕" }
        }
    }
}

// ---------------- composer ----------------

#[component]
fn Composer() -> Element {
    let mut s = use_context::<AppState>();
    let mut dragging = use_signal(|| false);
    let text = s.composer.read().clone();
    let pending = s.pending.read().clone();
    let streaming = s.running.read().is_some();
    let busy = pending.iter().any(|p| p.upload.is_busy());
    let can_send = !streaming && !busy && (!text.trim().is_empty() || pending.iter().any(|p| p.upload.is_ready()));
    let class = if dragging() { "composer dragging" } else { "composer" };
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
                        s.viewer.set(Some((f, name.clone())));
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

// ---------------- dialogs ----------------

#[component]
fn Modals() -> Element {
    let mut s = use_context::<AppState>();
    let confirm = s.confirm_delete.read().clone();
    let viewer = s.viewer.read().clone();
    let show_prompt = (s.show_system_prompt)();
    rsx! {
        if let Some(c) = confirm {
            div { class: "modal-backdrop",
                div { class: "modal", "data-testid": "confirm-dialog", role: "dialog",
                    h3 { "Delete this chat?" }
                    p { "“{c.title}” and its messages will be deleted. This can't be undone." }
                    div { class: "row end",
                        button { class: "btn ghost", "data-testid": "cancel-delete", onclick: move |_| s.confirm_delete.set(None), "Cancel" }
                        button {
                            class: "btn danger",
                            "data-testid": "confirm-delete",
                            onclick: move |_| {
                                s.confirm_delete.set(None);
                                spawn_forever(actions::delete(s, c.id.clone()));
                            },
                            "Delete"
                        }
                    }
                }
            }
        }
        if let Some((fid, name)) = viewer {
            ExtractionViewer { key: "{fid}", file_id: fid.clone(), name }
        }
        if show_prompt {
            SystemPromptDialog {}
        }
    }
}

#[component]
fn SystemPromptDialog() -> Element {
    let mut s = use_context::<AppState>();
    let initial = s.current.peek().as_ref().map(|c| c.system_prompt.clone()).unwrap_or_else(|| s.draft_system_prompt.peek().clone());
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
                    button { class: "btn ghost", onclick: move |_| s.show_system_prompt.set(false), "Cancel" }
                    button {
                        class: "btn primary",
                        "data-testid": "system-prompt-save",
                        onclick: move |_| {
                            let t = text.peek().clone();
                            s.show_system_prompt.set(false);
                            let cid = s.current_id();
                            if cid.is_empty() {
                                s.draft_system_prompt.set(t);
                            } else {
                                spawn_forever(actions::update_conversation(s, confab_proto::conversation::v1::UpdateConversationRequest {
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
    let mut s = use_context::<AppState>();
    let fid = file_id.clone();
    let extraction = use_resource(move || actions::load_extraction(fid.clone()));
    let thumb = s.thumbnails.read().get(&file_id).cloned().unwrap_or_default();
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
        div { class: "modal-backdrop", onclick: move |_| s.viewer.set(None),
            div {
                class: "modal wide",
                "data-testid": "extraction-viewer",
                role: "dialog",
                onclick: move |e: MouseEvent| e.stop_propagation(),
                div { class: "row",
                    h3 { class: "grow", "What the model saw — {name}" }
                    button { class: "icon", "data-testid": "close-viewer", onclick: move |_| s.viewer.set(None), "✕" }
                }
                div { class: "viewer-body", {body} }
            }
        }
    }
}

// Icons as inline SVG: emoji fonts are not everywhere (e.g. headless Linux).

#[component]
fn PaperclipIcon() -> Element {
    rsx! {
        svg { width: "20", height: "20", view_box: "0 0 24 24", fill: "none", stroke: "currentColor", stroke_width: "2", stroke_linecap: "round",
            path { d: "M21 12.5l-8.5 8.5a5 5 0 0 1-7-7L14 5.5a3.5 3.5 0 0 1 5 5L10.5 19a2 2 0 0 1-3-3L15 8.5" }
        }
    }
}

#[component]
fn DocIcon() -> Element {
    rsx! {
        svg { width: "18", height: "18", view_box: "0 0 24 24", fill: "none", stroke: "currentColor", stroke_width: "2", stroke_linejoin: "round",
            path { d: "M14 3H6a1 1 0 0 0-1 1v16a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1V8z M14 3v5h5 M8 13h8 M8 17h6" }
        }
    }
}

#[component]
fn ImageIcon() -> Element {
    rsx! {
        svg { width: "18", height: "18", view_box: "0 0 24 24", fill: "none", stroke: "currentColor", stroke_width: "2", stroke_linejoin: "round",
            rect { x: "3", y: "4", width: "18", height: "16", rx: "2" }
            path { d: "M3 17l5-5 4 4 3-3 6 6" }
        }
    }
}

#[component]
fn CopyIcon() -> Element {
    rsx! {
        svg { width: "15", height: "15", view_box: "0 0 24 24", fill: "none", stroke: "currentColor", stroke_width: "2", stroke_linejoin: "round",
            rect { x: "9", y: "9", width: "12", height: "12", rx: "2" }
            path { d: "M5 15H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1h10a1 1 0 0 1 1 1v1" }
        }
    }
}
