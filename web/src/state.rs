//! Application state shared through the Dioxus context: plain signals, no global store.

use std::collections::HashMap;

use confab_proto::chat::v1::ModelInfo;
use confab_proto::conversation::v1::{
    Attachment, ContextPlan, Conversation, Message, MessageStatus, Role, SearchHit,
};
use confab_proto::ratelimit::v1::Quota;
use confab_web_core::errors::UiError;
use confab_web_core::scroll::AutoScroll;
use confab_web_core::thread::{HasKind, MessageKind};
use confab_web_core::upload::Upload;
use dioxus::core::Task;
use dioxus::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub enum UiStatus {
    Streaming,
    Complete,
    Stopped,
    Failed { text: String, retryable: bool },
}

/// A message as the chat view renders it.
#[derive(Clone, Debug, PartialEq)]
pub struct UiMessage {
    pub kind: MessageKind,
    pub is_user: bool,
    pub content: String,
    pub status: UiStatus,
    pub attachments: Vec<Attachment>,
    pub model: String,
    pub embedded: bool,
    pub generation_id: String,
    pub context: Option<ContextPlan>,
}

impl UiMessage {
    pub fn from_proto(m: &Message, models: &[ModelInfo]) -> Self {
        let status = match MessageStatus::try_from(m.status).unwrap_or(MessageStatus::Complete) {
            MessageStatus::Streaming => UiStatus::Streaming,
            MessageStatus::Stopped => UiStatus::Stopped,
            MessageStatus::Failed => UiStatus::Failed {
                text: confab_web_core::errors::describe_failure(&m.error_message, false, 0),
                retryable: true,
            },
            _ => UiStatus::Complete,
        };
        Self {
            kind: MessageKind::Stored(m.id.clone()),
            is_user: m.role == Role::User as i32,
            content: m.content.clone(),
            status,
            attachments: m.attachments.clone(),
            model: m.model.clone(),
            embedded: models.iter().any(|x| x.embedded && x.id == m.model),
            generation_id: m.generation_id.clone(),
            context: m.context.clone(),
        }
    }

    /// A message that exists only in this tab so far (nothing stored, nothing streamed).
    pub fn local(
        kind: MessageKind,
        is_user: bool,
        content: String,
        attachments: Vec<Attachment>,
    ) -> Self {
        Self {
            kind,
            is_user,
            content,
            status: if is_user {
                UiStatus::Complete
            } else {
                UiStatus::Streaming
            },
            attachments,
            model: String::new(),
            embedded: false,
            generation_id: String::new(),
            context: None,
        }
    }
}

impl HasKind for UiMessage {
    fn kind(&self) -> &MessageKind {
        &self.kind
    }
}

/// One file in the composer.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingFile {
    pub local_id: u64,
    pub upload: Upload,
    pub mime: String,
    /// Object URL of the local bytes, for image previews.
    pub preview_url: Option<String>,
}

/// The one dialog open over the chat (each is modal, so there is never more than one).
/// A new dialog is a new variant here and an arm in `ui::dialogs::Dialogs`.
#[derive(Clone, Debug, PartialEq)]
pub enum Dialog {
    /// Asks before deleting this conversation.
    ConfirmDelete(Conversation),
    /// "What the model saw": the extraction of a file.
    Extraction { file_id: String, name: String },
    /// The system prompt of the current conversation (or of the next one).
    SystemPrompt,
}

/// A running generation.
#[derive(Clone, Copy)]
pub struct Running {
    pub task: Task,
}

#[derive(Clone, Copy)]
pub struct AppState {
    pub conversations: Signal<Vec<Conversation>>,
    pub next_page: Signal<Option<String>>,
    pub loading_conversations: Signal<bool>,
    pub current: Signal<Option<Conversation>>,
    pub messages: Signal<Vec<UiMessage>>,
    pub loading_messages: Signal<bool>,
    pub running: Signal<Option<Running>>,
    /// Generation id of the running stream once known (Stop needs it).
    pub generation_id: Signal<String>,
    pub models: Signal<Vec<ModelInfo>>,
    pub selected_model: Signal<String>,
    /// System prompt for a chat not created yet.
    pub draft_system_prompt: Signal<String>,
    pub quota: Signal<Option<Quota>>,
    pub pending: Signal<Vec<PendingFile>>,
    pub max_file_bytes: Signal<u64>,
    pub error: Signal<Option<UiError>>,
    pub search_query: Signal<String>,
    pub search_results: Signal<Option<Vec<SearchHit>>>,
    pub search_task: Signal<Option<Task>>,
    pub drawer_open: Signal<bool>,
    pub scroll: Signal<AutoScroll>,
    /// Message to scroll to and flash (opened from a search hit).
    pub focus_message: Signal<Option<String>>,
    pub dialog: Signal<Option<Dialog>>,
    pub thumbnails: Signal<HashMap<String, String>>,
    pub composer: Signal<String>,
    /// Source of `local` numbers: pending files and messages not stored yet.
    pub next_local_id: Signal<u64>,
}

impl AppState {
    pub fn new() -> Self {
        Self {
            conversations: Signal::new(Vec::new()),
            next_page: Signal::new(None),
            loading_conversations: Signal::new(false),
            current: Signal::new(None),
            messages: Signal::new(Vec::new()),
            loading_messages: Signal::new(false),
            running: Signal::new(None),
            generation_id: Signal::new(String::new()),
            models: Signal::new(Vec::new()),
            selected_model: Signal::new(String::new()),
            draft_system_prompt: Signal::new(String::new()),
            quota: Signal::new(None),
            pending: Signal::new(Vec::new()),
            max_file_bytes: Signal::new(confab_web_core::upload::DEFAULT_MAX_FILE_BYTES),
            error: Signal::new(None),
            search_query: Signal::new(String::new()),
            search_results: Signal::new(None),
            search_task: Signal::new(None),
            drawer_open: Signal::new(false),
            scroll: Signal::new(AutoScroll::default()),
            focus_message: Signal::new(None),
            dialog: Signal::new(None),
            thumbnails: Signal::new(HashMap::new()),
            composer: Signal::new(String::new()),
            next_local_id: Signal::new(1),
        }
    }

    pub fn is_streaming(&self) -> bool {
        self.running.peek().is_some()
    }

    /// A number no other local file or message in this tab has.
    pub fn take_local_id(&mut self) -> u64 {
        let n = *self.next_local_id.peek();
        self.next_local_id.set(n + 1);
        n
    }

    pub fn current_id(&self) -> String {
        self.current
            .peek()
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default()
    }

    pub fn selected_model_info(&self) -> Option<ModelInfo> {
        let sel = self.selected_model.read().clone();
        let models = self.models.read();
        models
            .iter()
            .find(|m| m.id == sel)
            .or_else(|| models.iter().find(|m| m.is_default))
            .cloned()
    }
}
