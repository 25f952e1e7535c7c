//! The components, by feature: the sidebar (conversations, search, quota), the chat
//! header, the messages, the composer (with uploads) and the dialogs. Stable
//! `data-testid` attributes are what the browser tests use.

mod composer;
mod dialogs;
mod header;
mod icons;
mod messages;
mod sidebar;

use confab_web_core::keys::{KeyAction, KeyPress, global_key};
use dioxus::core::spawn_forever;
use dioxus::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::actions;
use crate::api;
use crate::state::AppState;

fn doc() -> Option<web_sys::Document> {
    web_sys::window()?.document()
}

/// Page-wide keys (Esc stops, Ctrl/Cmd+K focuses search) and the copy buttons inside
/// rendered Markdown, which is injected HTML and so has no Dioxus handlers.
fn install_document_listeners() {
    let Some(d) = doc() else { return };
    let keys =
        Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(move |e: web_sys::KeyboardEvent| {
            let Some(d) = doc() else { return };
            let stop = d.query_selector("[data-testid=stop-button]").ok().flatten();
            let key = e.key();
            let k = KeyPress {
                key: &key,
                shift: e.shift_key(),
                ctrl: e.ctrl_key(),
                meta: e.meta_key(),
                alt: e.alt_key(),
                composing: e.is_composing(),
            };
            match global_key(k, stop.is_some()) {
                KeyAction::FocusSearch => {
                    e.prevent_default();
                    if let Some(el) = d
                        .get_element_by_id("search-input")
                        .and_then(|x| x.dyn_into::<web_sys::HtmlElement>().ok())
                    {
                        // On a phone the search box lives in the closed drawer: open it first.
                        let narrow = web_sys::window()
                            .and_then(|w| w.inner_width().ok())
                            .and_then(|v| v.as_f64())
                            .is_some_and(|w| w <= 700.0);
                        let open = d
                            .get_element_by_id("app")
                            .is_some_and(|a| a.class_list().contains("drawer-open"));
                        if narrow
                            && !open
                            && let Some(b) = d
                                .query_selector("[data-testid=drawer-toggle]")
                                .ok()
                                .flatten()
                                .and_then(|x| x.dyn_into::<web_sys::HtmlElement>().ok())
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
        let Some(t) = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let Ok(Some(btn)) = t.closest(".copy-code") else {
            return;
        };
        let Ok(Some(block)) = btn.closest(".code-block") else {
            return;
        };
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
    let drawer = if (s.drawer_open)() {
        "app drawer-open"
    } else {
        "app"
    };
    rsx! {
        div { id: "app", class: "{drawer}",
            sidebar::Sidebar {}
            div {
                class: "drawer-backdrop",
                "data-testid": "drawer-backdrop",
                onclick: move |_| close_drawer(s),
            }
            main { class: "chat", "data-testid": "chat",
                header::ChatHeader {}
                messages::MessageList {}
                messages::ErrorBanner {}
                composer::Composer {}
            }
            dialogs::Dialogs {}
        }
    }
}

fn close_drawer(mut s: AppState) {
    s.drawer_open.set(false);
}
