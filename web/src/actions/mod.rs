//! What the UI does: every gRPC call and how its answer updates the state, by feature.
//! Components call these; none of them renders anything.

mod conversations;
mod streaming;
mod uploads;

pub use conversations::{
    delete, load_conversations, new_chat, open_conversation, open_search_hit, rename, search_input,
    set_pinned, update_conversation,
};
pub use streaming::{edit_and_resend, regenerate, send, stop};
pub use uploads::{add_files, load_extraction, load_thumbnail};

use confab_proto::chat::v1::{GetQuotaRequest, ListModelsRequest};
use confab_web_core::errors::UiError;
use confab_web_core::route::Route;
use dioxus::prelude::*;
use tonic::Status;

use crate::api::{self, call, req, ui_error};
use crate::state::AppState;

fn show_error(mut s: AppState, e: UiError) {
    s.error.set(Some(e));
}

fn status_error(s: AppState, st: &Status) {
    show_error(s, ui_error(st));
}

/// Page load: a session, the models and quota, the sidebar, then the conversation the
/// address names (`#c=<id>` or `#c=<id>&m=<message id>`).
pub async fn bootstrap(mut s: AppState) {
    if let Err(e) = api::ensure_session(false).await {
        show_error(
            s,
            UiError {
                text: format!("Can't reach the server: {e}"),
                retryable: true,
                retry_after_seconds: None,
            },
        );
        return;
    }
    load_models(s).await;
    refresh_quota(s).await;
    load_conversations(s, true).await;
    if let Route::Conversation { id, message } = Route::parse(&api::get_hash()) {
        s.focus_message.set(message);
        open_conversation(s, id).await;
    }
}

pub async fn load_models(mut s: AppState) {
    match call(|t| async move { api::chat().list_models(req(ListModelsRequest {}, &t)).await })
        .await
    {
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
    if let Ok(r) =
        call(|t| async move { api::chat().get_quota(req(GetQuotaRequest {}, &t)).await }).await
    {
        s.quota.set(Some(r.into_inner()));
    }
}
