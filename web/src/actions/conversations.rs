//! Conversations: the sidebar's list (pages, order), opening one (with a re-attach to
//! an answer still streaming), rename / pin / system prompt / model, delete, and search.

use confab_proto::chat::v1::AttachRequest;
use confab_proto::conversation::v1::{
    Conversation, DeleteConversationRequest, GetConversationRequest, ListConversationsRequest,
    ListMessagesRequest, MessageStatus, Role, SearchConversationsRequest,
    UpdateConversationRequest,
};
use confab_web_core::route::Route;
use confab_web_core::sequence::{LiveAnswer, StoredTail, reattach_target};
use dioxus::core::spawn_forever;
use dioxus::prelude::*;

use super::status_error;
use super::streaming::{StreamCall, start_stream, stop_local};
use crate::api::{self, call, req};
use crate::state::{AppState, UiMessage};

const PAGE_SIZE: u32 = 20;

pub async fn load_conversations(mut s: AppState, reset: bool) {
    if *s.loading_conversations.peek() {
        return;
    }
    let token = if reset {
        String::new()
    } else {
        match s.next_page.peek().clone() {
            Some(t) => t,
            None => return,
        }
    };
    s.loading_conversations.set(true);
    let r = call(|t| {
        let page_token = token.clone();
        async move {
            api::conversations()
                .list_conversations(req(
                    ListConversationsRequest {
                        page_size: PAGE_SIZE,
                        page_token,
                        pinned_first: true,
                    },
                    &t,
                ))
                .await
        }
    })
    .await;
    s.loading_conversations.set(false);
    match r {
        Ok(r) => {
            let r = r.into_inner();
            if reset {
                s.conversations.set(r.conversations);
            } else {
                let mut list = s.conversations.write();
                for c in r.conversations {
                    if !list.iter().any(|x| x.id == c.id) {
                        list.push(c);
                    }
                }
            }
            s.next_page
                .set((!r.next_page_token.is_empty()).then_some(r.next_page_token));
        }
        Err(st) => status_error(s, &st),
    }
}

pub(super) fn upsert_conversation(mut s: AppState, c: Conversation) {
    let mut list = s.conversations.write();
    list.retain(|x| x.id != c.id);
    // Pinned first, then newest activity.
    let pos = list
        .iter()
        .position(|x| {
            (!x.pinned && c.pinned) || (x.pinned == c.pinned && x.updated_at_ms <= c.updated_at_ms)
        })
        .unwrap_or(list.len());
    list.insert(pos, c);
}

pub fn new_chat(mut s: AppState) {
    stop_local(s);
    s.current.set(None);
    s.messages.set(Vec::new());
    s.draft_system_prompt.set(String::new());
    s.error.set(None);
    s.drawer_open.set(false);
    s.scroll.write().resume();
    api::set_hash(&Route::NewChat.to_hash());
    focus_composer();
}

pub fn focus_composer() {
    if let Some(el) = api::element("composer-input")
        && let Ok(el) = wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(el)
    {
        let _ = el.focus();
    }
}

pub async fn open_conversation(mut s: AppState, id: String) {
    stop_local(s);
    s.drawer_open.set(false);
    s.error.set(None);
    s.loading_messages.set(true);
    s.messages.set(Vec::new());
    let cid = id.clone();
    let conv = call(|t| {
        let conversation_id = cid.clone();
        async move {
            api::conversations()
                .get_conversation(req(GetConversationRequest { conversation_id }, &t))
                .await
        }
    })
    .await;
    let conv = match conv {
        Ok(c) => c.into_inner(),
        Err(st) => {
            s.loading_messages.set(false);
            status_error(s, &st);
            return;
        }
    };
    if !conv.model.is_empty() {
        s.selected_model.set(conv.model.clone());
    }
    s.current.set(Some(conv));
    let focus = s.focus_message.peek().clone();
    api::set_hash(&Route::conversation(&id, focus.as_deref()).to_hash());
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..20 {
        let (cid, pt) = (id.clone(), page_token.clone());
        let r = call(|t| {
            let (conversation_id, page_token) = (cid.clone(), pt.clone());
            async move {
                api::conversations()
                    .list_messages(req(
                        ListMessagesRequest {
                            conversation_id,
                            page_size: 200,
                            page_token,
                            include_superseded: false,
                            newest_first: false,
                            omit_context: false,
                        },
                        &t,
                    ))
                    .await
            }
        })
        .await;
        match r {
            Ok(r) => {
                let r = r.into_inner();
                all.extend(r.messages);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            Err(st) => {
                status_error(s, &st);
                break;
            }
        }
    }
    let models = s.models.peek().clone();
    let ui: Vec<UiMessage> = all
        .iter()
        .map(|m| UiMessage::from_proto(m, &models))
        .collect();
    s.scroll.write().resume();
    s.messages.set(ui);
    s.loading_messages.set(false);
    // The last answer may still be streaming (refresh mid-answer): watch it again.
    let tail = all.last().map(|m| StoredTail {
        is_assistant: m.role == Role::Assistant as i32,
        is_streaming: m.status == MessageStatus::Streaming as i32,
        generation_id: &m.generation_id,
    });
    if let Some(gid) = reattach_target(tail) {
        let last = all.last().cloned().unwrap_or_default();
        let live = LiveAnswer::reattach(&gid, &last.id, &last.content);
        start_stream(
            s,
            StreamCall::Attach(AttachRequest {
                generation_id: gid,
                after_sequence: 0,
            }),
            live,
        );
    }
}

pub async fn rename(s: AppState, id: String, title: String) {
    update_conversation(
        s,
        UpdateConversationRequest {
            conversation_id: id,
            title: Some(title),
            ..Default::default()
        },
    )
    .await;
}

pub async fn set_pinned(s: AppState, id: String, pinned: bool) {
    update_conversation(
        s,
        UpdateConversationRequest {
            conversation_id: id,
            pinned: Some(pinned),
            ..Default::default()
        },
    )
    .await;
}

pub async fn update_conversation(mut s: AppState, u: UpdateConversationRequest) {
    let r = call(|t| {
        let u = u.clone();
        async move { api::conversations().update_conversation(req(u, &t)).await }
    })
    .await;
    match r {
        Ok(c) => {
            let c = c.into_inner();
            if s.current.peek().as_ref().is_some_and(|x| x.id == c.id) {
                s.current.set(Some(c.clone()));
            }
            upsert_conversation(s, c);
        }
        Err(st) => status_error(s, &st),
    }
}

pub async fn delete(mut s: AppState, id: String) {
    let cid = id.clone();
    let r = call(|t| {
        let conversation_id = cid.clone();
        async move {
            api::conversations()
                .delete_conversation(req(DeleteConversationRequest { conversation_id }, &t))
                .await
        }
    })
    .await;
    match r {
        Ok(_) => {
            s.conversations.write().retain(|c| c.id != id);
            if s.current_id() == id {
                new_chat(s);
            }
        }
        Err(st) => status_error(s, &st),
    }
}

pub fn search_input(mut s: AppState, q: String) {
    s.search_query.set(q.clone());
    if let Some(t) = s.search_task.take() {
        t.cancel();
    }
    if q.trim().is_empty() {
        s.search_results.set(None);
        return;
    }
    let task = spawn_forever(async move {
        api::sleep_ms(250).await;
        let r = call(|t| {
            let query = q.clone();
            async move {
                api::conversations()
                    .search_conversations(req(
                        SearchConversationsRequest {
                            query,
                            page_size: 20,
                        },
                        &t,
                    ))
                    .await
            }
        })
        .await;
        match r {
            Ok(r) => s.search_results.set(Some(r.into_inner().hits)),
            Err(st) => status_error(s, &st),
        }
    });
    s.search_task.set(Some(task));
}

pub async fn open_search_hit(mut s: AppState, conversation_id: String, message_id: String) {
    s.focus_message
        .set((!message_id.is_empty()).then_some(message_id.clone()));
    if s.current_id() == conversation_id && !s.messages.peek().is_empty() {
        s.drawer_open.set(false);
        api::set_hash(&Route::conversation(&conversation_id, Some(&message_id)).to_hash());
        return;
    }
    open_conversation(s, conversation_id).await;
}

pub(super) fn adopt_conversation(mut s: AppState, id: String) {
    if id.is_empty() || s.current_id() == id {
        return;
    }
    let now = api::now_ms();
    let c = Conversation {
        id: id.clone(),
        title: "New chat".into(),
        model: s.selected_model.peek().clone(),
        system_prompt: s.draft_system_prompt.peek().clone(),
        created_at_ms: now,
        updated_at_ms: now,
        ..Default::default()
    };
    s.current.set(Some(c.clone()));
    api::set_hash(&Route::conversation(&id, None).to_hash());
    upsert_conversation(s, c);
}

pub(super) fn set_title(mut s: AppState, id: &str, title: &str) {
    if let Some(c) = s.current.write().as_mut().filter(|c| c.id == id) {
        c.title = title.to_string();
    }
    if let Some(c) = s.conversations.write().iter_mut().find(|c| c.id == id) {
        c.title = title.to_string();
    }
}

/// Moves the current conversation to the top (newest activity).
pub(super) fn bump_current(s: AppState) {
    let Some(mut c) = s.current.peek().clone() else {
        return;
    };
    if let Some(listed) = s.conversations.peek().iter().find(|x| x.id == c.id) {
        c.title = listed.title.clone();
        c.pinned = listed.pinned;
    }
    c.updated_at_ms = api::now_ms();
    upsert_conversation(s, c);
}
