//! The domain service: validation, limits, ids and timestamps, pagination tokens,
//! export, and releasing files on delete. Knows nothing of `tonic::Request`.

use std::sync::Arc;

use confab_common::{GrpcChannel, Identity};
use confab_proto::conversation::v1::{
    AppendMessageRequest, ContextPlan, Conversation, CreateConversationRequest,
    ExportConversationResponse, ExportFormat, ListConversationsRequest, ListConversationsResponse,
    ListMessagesRequest, ListMessagesResponse, Message, MessageStatus, Role,
    SearchConversationsResponse, SearchHit, SupersedeMessagesRequest, UpdateConversationRequest,
    UpdateMessageRequest,
};
use confab_proto::files::v1::ReleaseFilesRequest;
use confab_proto::files::v1::file_service_client::FileServiceClient;
use prost::Message as _;
use tracing::instrument;

use crate::clock::{Clock, SystemClock};
use crate::error::{ConversationError, Result};
use crate::export;
use crate::model::*;
use crate::plan::{self, SpanMessage, StoredPlan};
use crate::search;
use crate::store::{
    ConversationPatch, ConversationQuery, ConversationStore, MessagePatch, MessageQuery,
    StoredMessage,
};

/// Largest context plan stored with a message (encoded), 1 MiB.
pub const MAX_CONTEXT_BYTES: usize = 1024 * 1024;

pub struct Conversations {
    store: Arc<dyn ConversationStore>,
    files: Option<FileServiceClient<GrpcChannel>>,
    /// Every timestamp the service decides (stores take theirs from here).
    clock: Arc<dyn Clock>,
}

/// The chat service saves a streaming answer at least every few seconds while text
/// arrives and gives up on a silent model after a minute; an answer still marked
/// streaming long after that lost its generation (the process running it restarted).
pub const STALE_STREAMING_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// What an orphaned streaming answer reads as.
pub const INTERRUPTED: &str = "the answer was interrupted (the service restarted while it was being written); the partial text is kept — regenerate to try again";

impl std::fmt::Debug for Conversations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversations")
            .field("store", &self.store.backend())
            .field("files", &self.files.is_some())
            .field("clock", &self.clock)
            .finish()
    }
}

const CONVERSATION: &str = "conversation";
const MESSAGE: &str = "message";

fn check_role(role: i32) -> Result<()> {
    match Role::try_from(role) {
        Ok(Role::User | Role::Assistant | Role::System) => Ok(()),
        _ => Err(ConversationError::invalid(
            "role must be ROLE_USER, ROLE_ASSISTANT or ROLE_SYSTEM",
        )),
    }
}

fn check_status(status: i32) -> Result<i32> {
    match MessageStatus::try_from(status) {
        Ok(MessageStatus::Unspecified) => Ok(MessageStatus::Complete as i32),
        Ok(s) => Ok(s as i32),
        Err(_) => Err(ConversationError::invalid(format!(
            "status {status} is not a message status"
        ))),
    }
}

fn check_optional_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        Ok(())
    } else {
        check_id(what, id)
    }
}

impl Conversations {
    pub fn new(store: Arc<dyn ConversationStore>, files: Option<GrpcChannel>) -> Self {
        Self {
            store,
            files: files.map(FileServiceClient::new),
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the system clock (tests move a [`crate::clock::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A message as readers see it: an answer still marked streaming whose generation
    /// stopped updating it long ago reads as failed, with its partial text. Only the
    /// reading changes; a generation that is in fact alive still completes it.
    fn settle(&self, mut m: Message, now: i64) -> Message {
        if m.status == MessageStatus::Streaming as i32
            && now.saturating_sub(m.updated_at_ms) > STALE_STREAMING_AFTER.as_millis() as i64
        {
            m.status = MessageStatus::Failed as i32;
            if m.error_message.is_empty() {
                m.error_message = INTERRUPTED.to_owned();
            }
        }
        m
    }

    pub fn store(&self) -> &Arc<dyn ConversationStore> {
        &self.store
    }

    #[instrument(skip_all, fields(user = %user.user_id))]
    pub async fn create_conversation(
        &self,
        user: &Identity,
        req: CreateConversationRequest,
    ) -> Result<Conversation> {
        check_title(&req.title)?;
        check_chars("model", &req.model, MAX_MODEL_CHARS)?;
        check_bytes("system_prompt", &req.system_prompt, MAX_SYSTEM_PROMPT_BYTES)?;
        let now = self.now_ms();
        let c = Conversation {
            id: new_id(),
            title_set: !req.title.trim().is_empty(),
            title: req.title,
            model: req.model,
            system_prompt: req.system_prompt,
            pinned: false,
            created_at_ms: now,
            updated_at_ms: now,
            message_count: 0,
        };
        self.store
            .create_conversation(&user.user_id, c.clone())
            .await?;
        Ok(c)
    }

    #[instrument(skip_all, fields(user = %user.user_id))]
    pub async fn list_conversations(
        &self,
        user: &Identity,
        req: ListConversationsRequest,
    ) -> Result<ListConversationsResponse> {
        let size = page_size(
            "conversations",
            req.page_size,
            DEFAULT_CONVERSATION_PAGE,
            MAX_CONVERSATION_PAGE,
        )?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(ConversationCursor::decode(
                &req.page_token,
                req.pinned_first,
            )?)
        };
        let q = ConversationQuery {
            limit: size + 1,
            pinned_first: req.pinned_first,
            after,
        };
        let mut rows = self.store.list_conversations(&user.user_id, &q).await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => ConversationCursor {
                pinned_first: req.pinned_first,
                pinned: last.pinned,
                updated_at_ms: last.updated_at_ms,
                id: last.id.clone(),
            }
            .encode(),
            _ => String::new(),
        };
        Ok(ListConversationsResponse {
            conversations: rows,
            next_page_token,
        })
    }

    #[instrument(skip_all, fields(user = %user.user_id, conversation = %id))]
    pub async fn get_conversation(&self, user: &Identity, id: &str) -> Result<Conversation> {
        check_id("conversation_id", id)?;
        self.store
            .get_conversation(&user.user_id, id)
            .await?
            .ok_or(ConversationError::NotFound(CONVERSATION))
    }

    #[instrument(skip_all, fields(user = %user.user_id, conversation = %req.conversation_id))]
    pub async fn update_conversation(
        &self,
        user: &Identity,
        req: UpdateConversationRequest,
    ) -> Result<Conversation> {
        check_id("conversation_id", &req.conversation_id)?;
        if let Some(t) = &req.title {
            check_title(t)?;
        }
        if let Some(m) = &req.model {
            check_chars("model", m, MAX_MODEL_CHARS)?;
        }
        if let Some(s) = &req.system_prompt {
            check_bytes("system_prompt", s, MAX_SYSTEM_PROMPT_BYTES)?;
        }
        let activity = req.title.is_some() || req.model.is_some() || req.system_prompt.is_some();
        let patch = ConversationPatch {
            title: req.title,
            model: req.model,
            system_prompt: req.system_prompt,
            pinned: req.pinned,
            touch_at_ms: activity.then(|| self.now_ms()),
        };
        self.store
            .update_conversation(&user.user_id, &req.conversation_id, &patch)
            .await?
            .ok_or(ConversationError::NotFound(CONVERSATION))
    }

    /// Deletes; then asks the file service (when wired) to release the attachments.
    /// A failed release is logged, not returned: the deletion already happened and the
    /// file service reclaims unreferenced files on its own schedule.
    #[instrument(skip_all, fields(user = %user.user_id, conversation = %id))]
    pub async fn delete_conversation(&self, user: &Identity, id: &str) -> Result<Vec<String>> {
        check_id("conversation_id", id)?;
        let file_ids = self
            .store
            .delete_conversation(&user.user_id, id)
            .await?
            .ok_or(ConversationError::NotFound(CONVERSATION))?;
        if let Some(files) = &self.files
            && !file_ids.is_empty()
        {
            let req = user.request(ReleaseFilesRequest {
                file_ids: file_ids.clone(),
            });
            if let Err(status) = files.clone().release_files(req).await {
                tracing::warn!(code = ?status.code(), message = status.message(), files = file_ids.len(),
                    "could not release the deleted conversation's files");
            }
        }
        Ok(file_ids)
    }

    #[instrument(skip_all, fields(user = %user.user_id, conversation = %req.conversation_id))]
    pub async fn list_messages(
        &self,
        user: &Identity,
        req: ListMessagesRequest,
    ) -> Result<ListMessagesResponse> {
        check_id("conversation_id", &req.conversation_id)?;
        let size = page_size(
            "messages",
            req.page_size,
            DEFAULT_MESSAGE_PAGE,
            MAX_MESSAGE_PAGE,
        )?;
        let after_seq = if req.page_token.is_empty() {
            None
        } else {
            Some(
                MessageCursor::decode(
                    &req.page_token,
                    &req.conversation_id,
                    req.newest_first,
                    req.include_superseded,
                )?
                .seq,
            )
        };
        let q = MessageQuery {
            limit: size + 1,
            newest_first: req.newest_first,
            include_superseded: req.include_superseded,
            after_seq,
            omit_context: req.omit_context,
        };
        let mut rows = self
            .store
            .list_messages(&user.user_id, &req.conversation_id, &q)
            .await?
            .ok_or(ConversationError::NotFound(CONVERSATION))?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => MessageCursor {
                conversation_id: req.conversation_id.clone(),
                newest_first: req.newest_first,
                include_superseded: req.include_superseded,
                seq: last.seq,
            }
            .encode(),
            _ => String::new(),
        };
        Ok(ListMessagesResponse {
            messages: self
                .readable(&user.user_id, &req.conversation_id, rows)
                .await?,
            next_page_token,
        })
    }

    #[instrument(skip_all, fields(user = %user.user_id, conversation = %conversation_id, message = %message_id))]
    pub async fn get_message(
        &self,
        user: &Identity,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<Message> {
        check_id("conversation_id", conversation_id)?;
        check_id("message_id", message_id)?;
        let m = self
            .store
            .get_message(&user.user_id, conversation_id, message_id)
            .await?
            .ok_or(ConversationError::NotFound(MESSAGE))?;
        let mut out = self
            .readable(&user.user_id, conversation_id, vec![m])
            .await?;
        Ok(out.pop().expect("one in, one out"))
    }

    #[instrument(skip_all, fields(user = %user.user_id))]
    pub async fn search(
        &self,
        user: &Identity,
        query: &str,
        page_size: u32,
    ) -> Result<SearchConversationsResponse> {
        let size = self::page_size("search", page_size, DEFAULT_SEARCH_PAGE, MAX_SEARCH_PAGE)?;
        let terms = search::parse_query(query)?;
        let hits = self.store.search(&user.user_id, &terms, size).await?;
        Ok(SearchConversationsResponse {
            hits: hits
                .into_iter()
                .map(|h| SearchHit {
                    highlights: search::highlights(&h.snippet),
                    conversation: Some(h.conversation),
                    message_id: h.message_id,
                    snippet: h.snippet,
                    score: h.score,
                })
                .collect(),
        })
    }

    /// Every message of a conversation in order (export), page by page.
    async fn all_messages(&self, owner: &str, id: &str) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let mut after_seq = None;
        loop {
            let q = MessageQuery {
                limit: MAX_MESSAGE_PAGE,
                newest_first: false,
                include_superseded: false,
                after_seq,
                // Exports show text, not what the model saw.
                omit_context: true,
            };
            let page = self
                .store
                .list_messages(owner, id, &q)
                .await?
                .ok_or(ConversationError::NotFound(CONVERSATION))?;
            let full = page.len() == MAX_MESSAGE_PAGE as usize;
            after_seq = page.last().map(|m| m.seq);
            let now = self.now_ms();
            out.extend(page.into_iter().map(|m| self.settle(m.message, now)));
            if !full {
                return Ok(out);
            }
        }
    }

    #[instrument(skip_all, fields(user = %user.user_id, conversation = %id))]
    pub async fn export(
        &self,
        user: &Identity,
        id: &str,
        format: i32,
    ) -> Result<ExportConversationResponse> {
        check_id("conversation_id", id)?;
        let format = match ExportFormat::try_from(format) {
            Ok(ExportFormat::Unspecified | ExportFormat::Markdown) => ExportFormat::Markdown,
            Ok(ExportFormat::Json) => ExportFormat::Json,
            Err(_) => {
                return Err(ConversationError::invalid(
                    "format must be EXPORT_FORMAT_MARKDOWN or EXPORT_FORMAT_JSON",
                ));
            }
        };
        let c = self.get_conversation(user, id).await?;
        let messages = self.all_messages(&user.user_id, id).await?;
        Ok(export::export(&c, &messages, format))
    }

    #[instrument(skip_all, fields(user = %user.user_id, conversation = %req.conversation_id))]
    pub async fn append_message(
        &self,
        user: &Identity,
        req: AppendMessageRequest,
    ) -> Result<Message> {
        check_id("conversation_id", &req.conversation_id)?;
        check_role(req.role)?;
        let status = check_status(req.status)?;
        check_bytes("content", &req.content, MAX_CONTENT_BYTES)?;
        check_chars("model", &req.model, MAX_MODEL_CHARS)?;
        check_chars("generation_id", &req.generation_id, MAX_GENERATION_ID_CHARS)?;
        check_optional_id("parent_id", &req.parent_id)?;
        if req.attachments.len() > MAX_ATTACHMENTS {
            return Err(ConversationError::invalid(format!(
                "{} attachments; the limit is {MAX_ATTACHMENTS} per message",
                req.attachments.len()
            )));
        }
        for a in &req.attachments {
            if a.file_id.is_empty() {
                return Err(ConversationError::invalid("attachment file_id is required"));
            }
            check_chars("attachment file_id", &a.file_id, MAX_GENERATION_ID_CHARS)?;
            check_chars("attachment filename", &a.filename, MAX_FILENAME_CHARS)?;
            check_chars("attachment mime_type", &a.mime_type, MAX_MODEL_CHARS)?;
        }
        let now = self.now_ms();
        let m = Message {
            id: new_id(),
            conversation_id: req.conversation_id,
            role: req.role,
            content: req.content,
            status,
            attachments: req.attachments,
            usage: None,
            model: req.model,
            context: None,
            created_at_ms: now,
            updated_at_ms: now,
            parent_id: req.parent_id,
            superseded: false,
            generation_id: req.generation_id,
            error_message: String::new(),
        };
        self.store
            .append_message(&user.user_id, m)
            .await?
            .ok_or(ConversationError::NotFound(CONVERSATION))
    }

    #[instrument(skip_all, fields(user = %user.user_id, conversation = %req.conversation_id, message = %req.message_id))]
    pub async fn update_message(
        &self,
        user: &Identity,
        req: UpdateMessageRequest,
    ) -> Result<Message> {
        check_id("conversation_id", &req.conversation_id)?;
        check_id("message_id", &req.message_id)?;
        if let Some(c) = &req.content {
            check_bytes("content", c, MAX_CONTENT_BYTES)?;
        }
        let status = req.status.map(check_status).transpose()?;
        if let Some(m) = &req.model {
            check_chars("model", m, MAX_MODEL_CHARS)?;
        }
        if let Some(e) = &req.error_message {
            check_bytes("error_message", e, MAX_ERROR_MESSAGE_BYTES)?;
        }
        if let Some(c) = &req.context
            && c.encoded_len() > MAX_CONTEXT_BYTES
        {
            return Err(ConversationError::invalid(format!(
                "context plan is {} bytes; the limit is {} KiB",
                c.encoded_len(),
                MAX_CONTEXT_BYTES / 1024
            )));
        }
        let stored = match req.context.clone() {
            Some(plan) => Some(
                self.store_plan(&user.user_id, &req.conversation_id, plan)
                    .await?,
            ),
            None => None,
        };
        let patch = MessagePatch {
            content: req.content,
            status,
            usage: req.usage,
            context: stored,
            model: req.model,
            error_message: req.error_message,
            updated_at_ms: self.now_ms(),
        };
        let mut m = self
            .store
            .update_message(&user.user_id, &req.conversation_id, &req.message_id, &patch)
            .await?
            .ok_or(ConversationError::NotFound(MESSAGE))?;
        if req.context.is_some() {
            // The plan as sent, not as stored.
            m.context = req.context;
        } else if m.context.is_some() {
            m.context = self
                .get_message(user, &req.conversation_id, &req.message_id)
                .await?
                .context;
        }
        Ok(m)
    }

    /// The stored form of a plan: its history by reference when the conversation's
    /// messages reproduce it exactly (see [`crate::plan`]), else as sent. The counts the
    /// reference relies on are in the messages' ledgers before the plan is written.
    async fn store_plan(&self, owner: &str, cid: &str, plan: ContextPlan) -> Result<StoredPlan> {
        let Some(first_id) = plan::first_history_id(&plan) else {
            return Ok(StoredPlan::full(plan));
        };
        let (Some(first), Some(current)) = (
            self.store.get_message(owner, cid, first_id).await?,
            self.store
                .get_message(
                    owner,
                    cid,
                    &plan.messages[plan.messages.len() - 1].message_id,
                )
                .await?,
        ) else {
            return Ok(StoredPlan::full(plan));
        };
        let span = self.span(owner, cid, first.seq, current.seq + 1).await?;
        match plan::compact(&plan, &span) {
            Some((stored, additions)) => {
                self.store.add_token_counts(owner, cid, additions).await?;
                Ok(stored)
            }
            None => Ok(StoredPlan::full(plan)),
        }
    }

    /// Messages at positions `from..end` (superseded ones too), as plans refer to them.
    async fn span(&self, owner: &str, cid: &str, from: i64, end: i64) -> Result<Vec<SpanMessage>> {
        if end <= from || end - from > plan::MAX_REFERENCED_SPAN {
            return Ok(Vec::new());
        }
        let q = MessageQuery {
            limit: (end - from) as u32,
            newest_first: false,
            include_superseded: true,
            after_seq: Some(from - 1),
            omit_context: true,
        };
        Ok(self
            .store
            .list_messages(owner, cid, &q)
            .await?
            .unwrap_or_default()
            .iter()
            .map(StoredMessage::span)
            .collect())
    }

    /// Messages as readers see them: plans expanded back to what was sent (one read of
    /// the span all of them refer to), orphaned answers settled.
    async fn readable(
        &self,
        owner: &str,
        cid: &str,
        rows: Vec<StoredMessage>,
    ) -> Result<Vec<Message>> {
        let refs = rows.iter().filter_map(|m| m.history);
        let (from, end) = refs.fold((i64::MAX, i64::MIN), |(f, e), h| {
            (f.min(h.first_seq), e.max(h.end_seq))
        });
        let span = if from < end {
            self.span(owner, cid, from, end).await?
        } else {
            Vec::new()
        };
        let now = self.now_ms();
        Ok(rows
            .into_iter()
            .map(|m| {
                let plan = m.stored_plan();
                let mut message = m.message;
                message.context = plan.map(|p| plan::expand(p, &span));
                self.settle(message, now)
            })
            .collect())
    }

    #[instrument(skip_all, fields(user = %user.user_id, conversation = %req.conversation_id, message = %req.from_message_id))]
    pub async fn supersede_messages(
        &self,
        user: &Identity,
        req: SupersedeMessagesRequest,
    ) -> Result<Vec<String>> {
        check_id("conversation_id", &req.conversation_id)?;
        check_id("from_message_id", &req.from_message_id)?;
        self.store
            .supersede_messages(
                &user.user_id,
                &req.conversation_id,
                &req.from_message_id,
                req.inclusive,
                self.now_ms(),
            )
            .await?
            .ok_or(ConversationError::NotFound(MESSAGE))
    }
}
