//! Streaming answers: the turns that start one (send, regenerate, edit and resend), the
//! event loop that renders it (with one resume after a dropped connection), and Stop.
//!
//! The optimistic messages are told apart by `MessageKind` (`confab_web_core::thread`):
//! `Started` turns the pending user message and the live answer into stored ones.

use confab_proto::chat::v1::{
    AttachRequest, ChatEvent, EditAndResendRequest, FailureCode, FinishReason, RegenerateRequest,
    SendMessageRequest, StopGenerationRequest, chat_event,
};
use confab_proto::conversation::v1::Attachment;
use confab_web_core::errors::{UiError, describe_failure};
use confab_web_core::sequence::{AnswerStatus, Applied, LiveAnswer, StreamEvent};
use confab_web_core::thread::{self, MessageKind};
use confab_web_core::upload::LocalKind;
use dioxus::core::spawn_forever;
use dioxus::prelude::*;
use tonic::Status;

use super::conversations::{adopt_conversation, bump_current, set_title};
use super::{refresh_quota, show_error};
use crate::api::{self, call, req, ui_error};
use crate::state::{AppState, PendingFile, Running, UiMessage, UiStatus};

/// The calls that answer with a stream of `ChatEvent`s.
pub(super) enum StreamCall {
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
        chat_event::Event::Usage(u) => StreamEvent::Usage {
            total_tokens: u.total_tokens,
        },
        chat_event::Event::TitleUpdated(t) => StreamEvent::Title(t.title.clone()),
        chat_event::Event::Completed(c) => StreamEvent::Completed {
            stopped: c.finish_reason == FinishReason::Stopped as i32,
        },
        chat_event::Event::Failed(f) => StreamEvent::Failed {
            message: f.message.clone(),
            retryable: f.retryable,
            retry_after_seconds: f.retry_after_seconds,
            rate_limited: f.code == FailureCode::RateLimited as i32
                || f.code == FailureCode::UpstreamRateLimited as i32,
        },
    }
}

/// Writes the live answer into its message (a new one at the end if there is none yet).
fn sync_live(mut s: AppState, live: &LiveAnswer) {
    let status = match &live.status {
        AnswerStatus::Streaming => UiStatus::Streaming,
        AnswerStatus::Complete => UiStatus::Complete,
        AnswerStatus::Stopped => UiStatus::Stopped,
        AnswerStatus::Failed {
            message,
            retryable,
            retry_after_seconds,
            rate_limited,
        } => UiStatus::Failed {
            text: describe_failure(message, *rate_limited, *retry_after_seconds),
            retryable: *retryable || *rate_limited,
        },
    };
    let mut msgs = s.messages.write();
    let idx = match thread::live_index(&msgs, &live.assistant_message_id) {
        Some(i) => i,
        None => {
            msgs.push(UiMessage::local(
                MessageKind::Live { id: None },
                false,
                String::new(),
                vec![],
            ));
            msgs.len() - 1
        }
    };
    let m = &mut msgs[idx];
    let id = (!live.assistant_message_id.is_empty()).then(|| live.assistant_message_id.clone());
    m.kind = MessageKind::Live {
        id: id.or_else(|| m.kind.stored_id().map(str::to_string)),
    };
    m.content = live.text.clone();
    m.status = status;
    if !live.model.is_empty() {
        m.model = live.model.clone();
    }
    m.embedded = m.embedded || live.embedded;
    m.generation_id = live.generation_id.clone();
}

/// Ends the live answer's life as such: stored once the server named it, else unsaved.
fn settle_live(mut s: AppState) {
    // Writing marks the list changed: only when something is live.
    if !s
        .messages
        .peek()
        .iter()
        .any(|m| matches!(m.kind, MessageKind::Live { .. }))
    {
        return;
    }
    let local = s.take_local_id();
    for m in s.messages.write().iter_mut() {
        if let Some(kind) = thread::settled(&m.kind, local) {
            m.kind = kind;
        }
    }
}

/// Starts a streaming call and renders its events; the task is kept so Stop can end it.
/// Tasks live in the root scope (`spawn_forever`): the component that started them (e.g.
/// the answer being regenerated) may be unmounted while they run.
pub(super) fn start_stream(mut s: AppState, call_kind: StreamCall, mut live: LiveAnswer) {
    // A previous answer cut short by Stop or by switching away is no longer live.
    settle_live(s);
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
                                if let Some(i) = thread::pending_user_index(&msgs) {
                                    msgs[i].kind = MessageKind::Stored(st.user_message_id.clone());
                                }
                            }
                            if st.conversation_created || s.current.peek().is_none() {
                                adopt_conversation(s, ev.conversation_id.clone());
                            }
                            if let Some(m) =
                                s.messages.write().iter_mut().rev().find(|m| !m.is_user)
                            {
                                m.context = st.context.clone();
                            }
                        }
                        if live.apply(&ev.generation_id, ev.sequence, &to_stream_event(e))
                            == Applied::Ignored
                        {
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
                    call_kind = StreamCall::Attach(AttachRequest {
                        generation_id,
                        after_sequence,
                    });
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
        settle_live(s);
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
        s2.messages
            .write()
            .retain(|m| !(m.kind == MessageKind::Live { id: None } && m.content.is_empty()));
        if live.generation_id.is_empty() {
            // Refused before it started (e.g. rate limited): nothing was stored, so put the
            // text back in the composer instead of showing a message that doesn't exist.
            let mut msgs = s2.messages.write();
            if let Some(i) = thread::unsent_index(&msgs) {
                let m = msgs.remove(i);
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

/// Cancels the local stream task without asking the server (switching conversations).
pub(super) fn stop_local(mut s: AppState) {
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
        show_error(
            s,
            UiError {
                text: "Wait for the uploads to finish.".into(),
                retryable: false,
                retry_after_seconds: None,
            },
        );
        return;
    }
    let ready: Vec<&PendingFile> = pending.iter().filter(|p| p.upload.is_ready()).collect();
    if text.is_empty() && ready.is_empty() {
        return;
    }
    let file_ids: Vec<String> = ready
        .iter()
        .filter_map(|p| p.upload.file_id.clone())
        .collect();
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
    let local = s.take_local_id();
    s.messages.write().push(UiMessage::local(
        MessageKind::PendingUser { local },
        true,
        text.clone(),
        attachments,
    ));
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
    let r = RegenerateRequest {
        conversation_id: cid,
        model: s.selected_model.peek().clone(),
        detach_on_disconnect: true,
    };
    start_stream(s, StreamCall::Regenerate(r), LiveAnswer::new());
}

pub fn edit_and_resend(mut s: AppState, message_id: String, content: String) {
    if s.is_streaming() || content.trim().is_empty() {
        return;
    }
    let file_ids;
    {
        let mut msgs = s.messages.write();
        let Some(i) = msgs
            .iter()
            .position(|m| m.kind.stored_id() == Some(message_id.as_str()))
        else {
            return;
        };
        msgs.truncate(i + 1);
        msgs[i].content = content.clone();
        file_ids = msgs[i]
            .attachments
            .iter()
            .map(|a| a.file_id.clone())
            .collect();
        // The edited message gets a new id on the server, which `Started` brings.
        msgs[i].kind = MessageKind::PendingEdit {
            replaces: message_id.clone(),
        };
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
    let Some(running) = *s.running.peek() else {
        return;
    };
    let gid = s.generation_id.peek().clone();
    spawn_forever(async move {
        let mut s = s;
        let asked = if gid.is_empty() {
            false
        } else {
            call(|t| {
                let generation_id = gid.clone();
                async move {
                    api::chat()
                        .stop_generation(req(StopGenerationRequest { generation_id }, &t))
                        .await
                }
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
        settle_live(s);
    });
}
