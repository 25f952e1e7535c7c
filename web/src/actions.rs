//! What the UI does: every gRPC call and how its answer updates the state.

use confab_proto::chat::v1::{
    AttachRequest, ChatEvent, EditAndResendRequest, FailureCode, FinishReason, GetQuotaRequest, ListModelsRequest,
    RegenerateRequest, SendMessageRequest, StopGenerationRequest, chat_event,
};
use confab_proto::conversation::v1::{
    Attachment, Conversation, DeleteConversationRequest, GetConversationRequest, ListConversationsRequest,
    ListMessagesRequest, SearchConversationsRequest, UpdateConversationRequest,
};
use confab_proto::files::v1::{
    FileKind, FinishUploadRequest, GetExtractionRequest, GetThumbnailRequest, StartUploadRequest, UploadChunkRequest,
};
use confab_web_core::errors::{UiError, describe_failure};
use confab_web_core::sequence::{AnswerStatus, Applied, LiveAnswer, StoredTail, StreamEvent, reattach_target};
use confab_web_core::upload::{LocalKind, Upload, precheck};
use dioxus::core::spawn_forever;
use dioxus::prelude::*;
use tonic::Status;

use crate::api::{self, call, req, ui_error};
use crate::state::{AppState, PendingFile, Running, UiMessage, UiStatus};

const PAGE_SIZE: u32 = 20;

fn show_error(mut s: AppState, e: UiError) {
    s.error.set(Some(e));
}

fn status_error(s: AppState, st: &Status) {
    show_error(s, ui_error(st));
}

// ---------- bootstrap ----------

pub async fn bootstrap(mut s: AppState) {
    if let Err(e) = api::ensure_session(false).await {
        show_error(s, UiError { text: format!("Can't reach the server: {e}"), retryable: true, retry_after_seconds: None });
        return;
    }
    load_models(s).await;
    refresh_quota(s).await;
    load_conversations(s, true).await;
    let hash = api::get_hash();
    if let Some(rest) = hash.strip_prefix("c=") {
        let (cid, mid) = match rest.split_once("&m=") {
            Some((c, m)) => (c.to_string(), Some(m.to_string())),
            None => (rest.to_string(), None),
        };
        if !cid.is_empty() {
            s.focus_message.set(mid);
            open_conversation(s, cid).await;
        }
    }
}

pub async fn load_models(mut s: AppState) {
    match call(|t| async move { api::chat().list_models(req(ListModelsRequest {}, &t)).await }).await {
        Ok(r) => {
            let models = r.into_inner().models;
            if s.selected_model.peek().is_empty()
                && let Some(d) = models.iter().find(|m| m.is_default).or(models.first())
            {
                s.selected_model.set(d.id.clone());
            }
            s.models.set(models);
        }
        Err(st) => status_error(s, &st),
    }
}

pub async fn refresh_quota(mut s: AppState) {
    if let Ok(r) = call(|t| async move { api::chat().get_quota(req(GetQuotaRequest {}, &t)).await }).await {
        s.quota.set(Some(r.into_inner()));
    }
}

// ---------- conversations ----------

pub async fn load_conversations(mut s: AppState, reset: bool) {
    if *s.loading_conversations.peek() {
        return;
    }
    let token = if reset { String::new() } else {
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
                .list_conversations(req(ListConversationsRequest { page_size: PAGE_SIZE, page_token, pinned_first: true }, &t))
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
            s.next_page.set((!r.next_page_token.is_empty()).then_some(r.next_page_token));
        }
        Err(st) => status_error(s, &st),
    }
}

fn upsert_conversation(mut s: AppState, c: Conversation) {
    let mut list = s.conversations.write();
    list.retain(|x| x.id != c.id);
    // Pinned first, then newest activity.
    let pos = list
        .iter()
        .position(|x| (!x.pinned && c.pinned) || (x.pinned == c.pinned && x.updated_at_ms <= c.updated_at_ms))
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
    api::set_hash("");
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
        async move { api::conversations().get_conversation(req(GetConversationRequest { conversation_id }, &t)).await }
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
    api::set_hash(&match &focus {
        Some(m) => format!("c={id}&m={m}"),
        None => format!("c={id}"),
    });
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..20 {
        let (cid, pt) = (id.clone(), page_token.clone());
        let r = call(|t| {
            let (conversation_id, page_token) = (cid.clone(), pt.clone());
            async move {
                api::conversations()
                    .list_messages(req(
                        ListMessagesRequest { conversation_id, page_size: 200, page_token, include_superseded: false, newest_first: false, omit_context: false },
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
    let ui: Vec<UiMessage> = all.iter().map(|m| UiMessage::from_proto(m, &models)).collect();
    s.scroll.write().resume();
    s.messages.set(ui);
    s.loading_messages.set(false);
    // The last answer may still be streaming (refresh mid-answer): watch it again.
    let tail = all.last().map(|m| StoredTail {
        is_assistant: m.role == confab_proto::conversation::v1::Role::Assistant as i32,
        is_streaming: m.status == confab_proto::conversation::v1::MessageStatus::Streaming as i32,
        generation_id: &m.generation_id,
    });
    if let Some(gid) = reattach_target(tail) {
        let last = all.last().cloned().unwrap_or_default();
        let live = LiveAnswer::reattach(&gid, &last.id, &last.content);
        start_stream(s, StreamCall::Attach(AttachRequest { generation_id: gid, after_sequence: 0 }), live);
    }
}

pub async fn rename(s: AppState, id: String, title: String) {
    update_conversation(s, UpdateConversationRequest { conversation_id: id, title: Some(title), ..Default::default() }).await;
}

pub async fn set_pinned(s: AppState, id: String, pinned: bool) {
    update_conversation(s, UpdateConversationRequest { conversation_id: id, pinned: Some(pinned), ..Default::default() }).await;
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
        async move { api::conversations().delete_conversation(req(DeleteConversationRequest { conversation_id }, &t)).await }
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

// ---------- search ----------

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
                api::conversations().search_conversations(req(SearchConversationsRequest { query, page_size: 20 }, &t)).await
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
    s.focus_message.set((!message_id.is_empty()).then_some(message_id.clone()));
    if s.current_id() == conversation_id && !s.messages.peek().is_empty() {
        s.drawer_open.set(false);
        api::set_hash(&format!("c={conversation_id}&m={message_id}"));
        return;
    }
    open_conversation(s, conversation_id).await;
}

// ---------- chat ----------

pub enum StreamCall {
    Send(SendMessageRequest),
    Regenerate(RegenerateRequest),
    Edit(EditAndResendRequest),
    Attach(AttachRequest),
}

impl StreamCall {
    async fn open(&self, token: String) -> Result<tonic::Streaming<ChatEvent>, Status> {
        let mut c = api::chat();
        let r = match self {
            StreamCall::Send(m) => c.send_message(req(m.clone(), &token)).await,
            StreamCall::Regenerate(m) => c.regenerate(req(m.clone(), &token)).await,
            StreamCall::Edit(m) => c.edit_and_resend(req(m.clone(), &token)).await,
            StreamCall::Attach(m) => c.attach(req(m.clone(), &token)).await,
        };
        r.map(|r| r.into_inner())
    }
}

fn to_stream_event(e: &chat_event::Event) -> StreamEvent {
    match e {
        chat_event::Event::Started(x) => StreamEvent::Started {
            assistant_message_id: x.assistant_message_id.clone(),
            model: x.model.clone(),
            embedded: x.embedded_model,
        },
        chat_event::Event::Delta(d) => StreamEvent::Delta(d.text.clone()),
        chat_event::Event::Usage(u) => StreamEvent::Usage { total_tokens: u.total_tokens },
        chat_event::Event::TitleUpdated(t) => StreamEvent::Title(t.title.clone()),
        chat_event::Event::Completed(c) => StreamEvent::Completed { stopped: c.finish_reason == FinishReason::Stopped as i32 },
        chat_event::Event::Failed(f) => StreamEvent::Failed {
            message: f.message.clone(),
            retryable: f.retryable,
            retry_after_seconds: f.retry_after_seconds,
            rate_limited: f.code == FailureCode::RateLimited as i32 || f.code == FailureCode::UpstreamRateLimited as i32,
        },
    }
}

const LIVE_ID: &str = "live-answer";

/// Writes the live answer into the last message of the list.
fn sync_live(mut s: AppState, live: &LiveAnswer) {
    let status = match &live.status {
        AnswerStatus::Streaming => UiStatus::Streaming,
        AnswerStatus::Complete => UiStatus::Complete,
        AnswerStatus::Stopped => UiStatus::Stopped,
        AnswerStatus::Failed { message, retryable, retry_after_seconds, rate_limited } => UiStatus::Failed {
            text: describe_failure(message, *rate_limited, *retry_after_seconds),
            retryable: *retryable || *rate_limited,
        },
    };
    let mut msgs = s.messages.write();
    let idx = msgs
        .iter()
        .rposition(|m| m.id == LIVE_ID || (!live.assistant_message_id.is_empty() && m.id == live.assistant_message_id));
    let idx = match idx {
        Some(i) => i,
        None => {
            msgs.push(UiMessage {
                id: LIVE_ID.into(),
                is_user: false,
                content: String::new(),
                status: UiStatus::Streaming,
                attachments: vec![],
                model: String::new(),
                embedded: false,
                generation_id: String::new(),
                context: None,
            });
            msgs.len() - 1
        }
    };
    let m = &mut msgs[idx];
    if !live.assistant_message_id.is_empty() {
        m.id = live.assistant_message_id.clone();
    }
    m.content = live.text.clone();
    m.status = status;
    if !live.model.is_empty() {
        m.model = live.model.clone();
    }
    m.embedded = m.embedded || live.embedded;
    m.generation_id = live.generation_id.clone();
}

/// Starts a streaming call and renders its events; the task is kept so Stop can end it.
/// Tasks live in the root scope (`spawn_forever`): the component that started them (e.g.
/// the answer being regenerated) may be unmounted while they run.
pub fn start_stream(mut s: AppState, call_kind: StreamCall, mut live: LiveAnswer) {
    s.generation_id.set(live.generation_id.clone());
    s.scroll.write().resume();
    sync_live(s, &live);
    let task = spawn_forever(async move {
        let mut call_kind = call_kind;
        let mut resumed = false;
        loop {
            let opened = call(|t| call_kind.open(t)).await;
            let mut stream = match opened {
                Ok(st) => st,
                Err(st) => {
                    fail_live(s, &mut live, &st);
                    break;
                }
            };
            let mut broken: Option<Status> = None;
            loop {
                match stream.message().await {
                    Ok(Some(ev)) => {
                        let Some(e) = ev.event.as_ref() else { continue };
                        if let chat_event::Event::Started(st) = e {
                            // Swap the optimistic user message id for the stored one.
                            if !st.user_message_id.is_empty() {
                                let mut msgs = s.messages.write();
                                if let Some(u) = msgs.iter_mut().rev().find(|m| m.is_user && m.id.starts_with("local-")) {
                                    u.id = st.user_message_id.clone();
                                }
                            }
                            if st.conversation_created || s.current.peek().is_none() {
                                adopt_conversation(s, ev.conversation_id.clone());
                            }
                            if let Some(m) = s.messages.write().iter_mut().rev().find(|m| !m.is_user) {
                                m.context = st.context.clone();
                            }
                        }
                        if live.apply(&ev.generation_id, ev.sequence, &to_stream_event(e)) == Applied::Ignored {
                            continue;
                        }
                        if s.generation_id.peek().as_str() != live.generation_id {
                            s.generation_id.set(live.generation_id.clone());
                        }
                        if let chat_event::Event::TitleUpdated(t) = e {
                            set_title(s, &ev.conversation_id, &t.title);
                        }
                        sync_live(s, &live);
                        if live.is_finished() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(st) => {
                        broken = Some(st);
                        break;
                    }
                }
            }
            if live.is_finished() {
                break;
            }
            // The stream ended early (network hiccup, proxy timeout): resume once from the
            // last sequence we applied.
            match (live.resume_point(), resumed) {
                (Some((generation_id, after_sequence)), false) => {
                    resumed = true;
                    call_kind = StreamCall::Attach(AttachRequest { generation_id, after_sequence });
                }
                _ => {
                    match broken {
                        Some(st) => fail_live(s, &mut live, &st),
                        None => {
                            live.status = AnswerStatus::Stopped;
                            sync_live(s, &live);
                        }
                    }
                    break;
                }
            }
        }
        s.running.set(None);
        s.generation_id.set(String::new());
        refresh_quota(s).await;
        bump_current(s);
    });
    s.running.set(Some(Running { task }));
}

fn fail_live(s: AppState, live: &mut LiveAnswer, st: &Status) {
    let e = ui_error(st);
    let rate_limited = st.code() == tonic::Code::ResourceExhausted;
    live.status = AnswerStatus::Failed {
        message: e.text.clone(),
        retryable: e.retryable,
        retry_after_seconds: e.retry_after_seconds.unwrap_or(0),
        rate_limited: false,
    };
    if rate_limited || live.text.is_empty() {
        // Nothing was answered: show it as an error and drop the empty placeholder.
        let mut s2 = s;
        s2.messages.write().retain(|m| !(m.id == LIVE_ID && m.content.is_empty()));
        if live.generation_id.is_empty() {
            // Refused before it started (e.g. rate limited): nothing was stored, so put the
            // text back in the composer instead of showing a message that doesn't exist.
            let mut msgs = s2.messages.write();
            if let Some(m) = msgs.pop_if(|m| m.is_user && m.id.starts_with("local-") && !m.id.starts_with("local-edit-")) {
                if s2.composer.peek().is_empty() {
                    s2.composer.set(m.content);
                }
            }
        }
        show_error(s, e);
    } else {
        sync_live(s, live);
    }
}

fn adopt_conversation(mut s: AppState, id: String) {
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
    api::set_hash(&format!("c={id}"));
    upsert_conversation(s, c);
}

fn set_title(mut s: AppState, id: &str, title: &str) {
    if let Some(c) = s.current.write().as_mut().filter(|c| c.id == id) {
        c.title = title.to_string();
    }
    if let Some(c) = s.conversations.write().iter_mut().find(|c| c.id == id) {
        c.title = title.to_string();
    }
}

/// Moves the current conversation to the top (newest activity).
fn bump_current(s: AppState) {
    let Some(mut c) = s.current.peek().clone() else { return };
    if let Some(listed) = s.conversations.peek().iter().find(|x| x.id == c.id) {
        c.title = listed.title.clone();
        c.pinned = listed.pinned;
    }
    c.updated_at_ms = api::now_ms();
    upsert_conversation(s, c);
}

/// Cancels the local stream task without asking the server (switching conversations).
fn stop_local(mut s: AppState) {
    if let Some(r) = s.running.take() {
        r.task.cancel();
    }
    s.generation_id.set(String::new());
}

pub fn send(mut s: AppState) {
    if s.is_streaming() {
        return;
    }
    let text = s.composer.peek().trim().to_string();
    let pending = s.pending.peek().clone();
    if pending.iter().any(|p| p.upload.is_busy()) {
        show_error(s, UiError { text: "Wait for the uploads to finish.".into(), retryable: false, retry_after_seconds: None });
        return;
    }
    let ready: Vec<&PendingFile> = pending.iter().filter(|p| p.upload.is_ready()).collect();
    if text.is_empty() && ready.is_empty() {
        return;
    }
    let file_ids: Vec<String> = ready.iter().filter_map(|p| p.upload.file_id.clone()).collect();
    let attachments: Vec<Attachment> = ready
        .iter()
        .map(|p| Attachment {
            file_id: p.upload.file_id.clone().unwrap_or_default(),
            filename: p.upload.name.clone(),
            mime_type: p.mime.clone(),
            size_bytes: p.upload.size,
            is_image: p.upload.kind == LocalKind::Image,
        })
        .collect();
    for p in &ready {
        if let (Some(id), Some(url)) = (&p.upload.file_id, &p.preview_url) {
            s.thumbnails.write().insert(id.clone(), url.clone());
        }
    }
    s.error.set(None);
    s.composer.set(String::new());
    s.pending.set(Vec::new());
    let n = *s.next_local_id.peek();
    s.next_local_id.set(n + 1);
    s.messages.write().push(UiMessage {
        id: format!("local-{n}"),
        is_user: true,
        content: text.clone(),
        status: UiStatus::Complete,
        attachments,
        model: String::new(),
        embedded: false,
        generation_id: String::new(),
        context: None,
    });
    let request = SendMessageRequest {
        conversation_id: s.current_id(),
        content: text,
        file_ids,
        model: s.selected_model.peek().clone(),
        system_prompt: s.draft_system_prompt.peek().clone(),
        // A refresh mid-answer must not stop it: the page re-attaches on load.
        detach_on_disconnect: true,
    };
    start_stream(s, StreamCall::Send(request), LiveAnswer::new());
}

pub fn regenerate(mut s: AppState) {
    if s.is_streaming() {
        return;
    }
    let cid = s.current_id();
    if cid.is_empty() {
        return;
    }
    {
        let mut msgs = s.messages.write();
        if msgs.last().is_some_and(|m| !m.is_user) {
            msgs.pop();
        }
    }
    s.error.set(None);
    let r = RegenerateRequest { conversation_id: cid, model: s.selected_model.peek().clone(), detach_on_disconnect: true };
    start_stream(s, StreamCall::Regenerate(r), LiveAnswer::new());
}

pub fn edit_and_resend(mut s: AppState, message_id: String, content: String) {
    if s.is_streaming() || content.trim().is_empty() {
        return;
    }
    let file_ids;
    {
        let mut msgs = s.messages.write();
        let Some(i) = msgs.iter().position(|m| m.id == message_id) else { return };
        msgs.truncate(i + 1);
        msgs[i].content = content.clone();
        file_ids = msgs[i].attachments.iter().map(|a| a.file_id.clone()).collect();
        // The edited message gets a new id on the server; mark it as local until Started.
        msgs[i].id = format!("local-edit-{message_id}");
    }
    s.error.set(None);
    let r = EditAndResendRequest {
        conversation_id: s.current_id(),
        message_id,
        content,
        file_ids,
        model: s.selected_model.peek().clone(),
        detach_on_disconnect: true,
    };
    start_stream(s, StreamCall::Edit(r), LiveAnswer::new());
}

/// Stop: ask the server to cancel the generation (it stores the partial answer as
/// stopped); if it can't, drop the stream, which cancels upstream too.
pub fn stop(s: AppState) {
    let Some(running) = *s.running.peek() else { return };
    let gid = s.generation_id.peek().clone();
    spawn_forever(async move {
        let mut s = s;
        let asked = if gid.is_empty() {
            false
        } else {
            call(|t| {
                let generation_id = gid.clone();
                async move { api::chat().stop_generation(req(StopGenerationRequest { generation_id }, &t)).await }
            })
            .await
            .is_ok()
        };
        if asked {
            // Give the stream a moment to deliver the final "stopped" event.
            for _ in 0..30 {
                if s.running.peek().is_none() {
                    return;
                }
                api::sleep_ms(100).await;
            }
        }
        running.task.cancel();
        s.running.set(None);
        s.generation_id.set(String::new());
        if let Some(m) = s.messages.write().iter_mut().rev().find(|m| !m.is_user)
            && m.status == UiStatus::Streaming
        {
            m.status = UiStatus::Stopped;
        }
    });
}

// ---------- files ----------

fn update_pending(mut s: AppState, local_id: u64, f: impl FnOnce(&mut PendingFile)) {
    if let Some(p) = s.pending.write().iter_mut().find(|p| p.local_id == local_id) {
        f(p);
    }
}

/// Adds files from the picker or a drop: pre-checks, then uploads each concurrently.
pub fn add_files(mut s: AppState, files: Vec<dioxus::html::FileData>) {
    for file in files {
        let name = file.name();
        let size = file.size();
        let mime = file.content_type().unwrap_or_default();
        let local_id = *s.next_local_id.peek();
        s.next_local_id.set(local_id + 1);
        let max = *s.max_file_bytes.peek();
        let (upload, ok) = match precheck(&name, size, Some(&mime), max) {
            Ok(kind) => (Upload::new(name.clone(), size, kind), true),
            Err(e) => {
                let mut u = Upload::new(name.clone(), size, LocalKind::Document);
                u.fail(e);
                (u, false)
            }
        };
        s.pending.write().push(PendingFile { local_id, upload, mime: mime.clone(), preview_url: None });
        if ok {
            spawn_forever(async move { upload_file(s, local_id, file).await });
        }
    }
}

async fn upload_file(s: AppState, local_id: u64, file: dioxus::html::FileData) {
    let bytes = match file.read_bytes().await {
        Ok(b) => b,
        Err(e) => {
            update_pending(s, local_id, |p| p.upload.fail(format!("could not read the file: {e}")));
            return;
        }
    };
    let Some(mut upload) = s.pending.peek().iter().find(|p| p.local_id == local_id).map(|p| p.upload.clone()) else {
        return;
    };
    if upload.kind == LocalKind::Image {
        let mime = if file.content_type().unwrap_or_default().is_empty() { "image/png".to_string() } else { file.content_type().unwrap_or_default() };
        let url = api::object_url(&bytes, &mime);
        update_pending(s, local_id, |p| p.preview_url = url);
    }
    let start = StartUploadRequest {
        filename: upload.name.clone(),
        declared_size: upload.size,
        declared_content_type: file.content_type().unwrap_or_default(),
    };
    let started = call(|t| {
        let m = start.clone();
        async move { api::files().start_upload(req(m, &t)).await }
    })
    .await;
    let started = match started {
        Ok(r) => r.into_inner(),
        Err(st) => {
            update_pending(s, local_id, |p| p.upload.fail(ui_error(&st).text));
            return;
        }
    };
    if started.max_file_bytes > 0 {
        let mut mf = s.max_file_bytes;
        mf.set(started.max_file_bytes);
    }
    upload.started(started.upload_id.clone(), started.max_chunk_bytes, started.max_file_bytes);
    update_pending(s, local_id, |p| p.upload = upload.clone());
    while let Some(range) = upload.next_chunk() {
        let chunk = UploadChunkRequest {
            upload_id: started.upload_id.clone(),
            offset: range.start,
            data: bytes[range.start as usize..range.end as usize].to_vec(),
        };
        let r = call(|t| {
            let m = chunk.clone();
            async move { api::files().upload_chunk(req(m, &t)).await }
        })
        .await;
        match r {
            Ok(r) => {
                if let Err(e) = upload.chunk_acked(r.into_inner().received_bytes) {
                    upload.fail(e);
                }
            }
            Err(st) => upload.fail(ui_error(&st).text),
        }
        update_pending(s, local_id, |p| p.upload = upload.clone());
    }
    if upload.phase != confab_web_core::upload::Phase::Processing {
        return;
    }
    let finish = FinishUploadRequest { upload_id: started.upload_id.clone(), sha256: String::new() };
    let r = call(|t| {
        let m = finish.clone();
        async move { api::files().finish_upload(req(m, &t)).await }
    })
    .await;
    match r {
        Ok(r) => {
            let f = r.into_inner().file.unwrap_or_default();
            let is_image = f.kind == FileKind::Image as i32;
            upload.finished(f.id.clone(), Some(f.extraction_error.clone()));
            if is_image {
                upload.kind = LocalKind::Image;
            }
            let mime = f.mime_type.clone();
            update_pending(s, local_id, |p| {
                p.upload = upload.clone();
                if !mime.is_empty() {
                    p.mime = mime;
                }
            });
        }
        Err(st) => {
            upload.fail(ui_error(&st).text);
            update_pending(s, local_id, |p| p.upload = upload.clone());
        }
    }
}

pub async fn load_thumbnail(mut s: AppState, file_id: String) {
    if s.thumbnails.peek().contains_key(&file_id) {
        return;
    }
    // Mark as loading so several renders don't all fetch it.
    s.thumbnails.write().insert(file_id.clone(), String::new());
    let fid = file_id.clone();
    let r = call(|t| {
        let file_id = fid.clone();
        async move { api::files().get_thumbnail(req(GetThumbnailRequest { file_id }, &t)).await }
    })
    .await;
    if let Ok(th) = r {
        let th = th.into_inner();
        if let Some(url) = api::object_url(&th.data, &th.mime_type) {
            s.thumbnails.write().insert(file_id, url);
        }
    }
}

pub async fn load_extraction(file_id: String) -> Result<confab_proto::files::v1::Extraction, UiError> {
    call(|t| {
        let file_id = file_id.clone();
        async move { api::files().get_extraction(req(GetExtractionRequest { file_id }, &t)).await }
    })
    .await
    .map(|r| r.into_inner())
    .map_err(|st| ui_error(&st))
}
