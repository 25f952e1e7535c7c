//! Storage behind one trait, with two implementations under one contract test suite:
//! SQLite (embedded default) and MongoDB (distributed).
//!
//! Every method takes the owner; a record of another owner behaves exactly as a
//! missing one (`None`). Ids, timestamps and limits are decided by the caller
//! ([`crate::service`]), so both stores behave the same.

use confab_proto::conversation::v1::{Attachment, Conversation, Message, TokenUsage};

use crate::error::Result;
use crate::model::ConversationCursor;
use crate::plan::{HistoryRef, LedgerAddition, SpanMessage, StoredPlan, TokenLedger};

pub mod mongo;
pub mod sqlite;

pub use mongo::MongoStore;
pub use sqlite::SqliteStore;

/// Fields changed by UpdateConversation; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ConversationPatch {
    pub title: Option<String>,
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub pinned: Option<bool>,
    /// New `updated_at` when the change counts as activity (title and settings do; pinning does not).
    pub touch_at_ms: Option<i64>,
}

/// Fields changed by UpdateMessage.
#[derive(Debug, Clone, Default)]
pub struct MessagePatch {
    pub content: Option<String>,
    pub status: Option<i32>,
    pub usage: Option<TokenUsage>,
    /// As stored: its history by reference where the service could (see [`crate::plan`]).
    pub context: Option<StoredPlan>,
    pub model: Option<String>,
    pub error_message: Option<String>,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ConversationQuery {
    /// Rows to return (the caller asks one more than the page to know if there is a next).
    pub limit: u32,
    pub pinned_first: bool,
    pub after: Option<ConversationCursor>,
}

#[derive(Debug, Clone)]
pub struct MessageQuery {
    pub limit: u32,
    pub newest_first: bool,
    pub include_superseded: bool,
    /// Sequence number of the last message of the previous page.
    pub after_seq: Option<i64>,
    /// Messages come without their context plans.
    pub omit_context: bool,
}

/// A message with its position in the conversation (for cursors) and what its plan
/// and the plans of later answers refer to.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub seq: i64,
    /// `context` holds the stored plan: without its referenced history when `history` is set.
    pub message: Message,
    pub history: Option<HistoryRef>,
    /// The conversation's next position when the message was superseded (unset for
    /// messages superseded before marks were kept).
    pub superseded_mark: Option<i64>,
    pub ledger: TokenLedger,
}

impl StoredMessage {
    pub fn new(seq: i64, message: Message) -> Self {
        Self {
            seq,
            message,
            history: None,
            superseded_mark: None,
            ledger: TokenLedger::default(),
        }
    }

    pub fn span(&self) -> SpanMessage {
        SpanMessage {
            seq: self.seq,
            id: self.message.id.clone(),
            role: self.message.role,
            superseded: self.message.superseded,
            superseded_mark: self.superseded_mark,
            ledger: self.ledger.clone(),
        }
    }

    /// The stored plan, if the message has one.
    pub fn stored_plan(&self) -> Option<StoredPlan> {
        self.message.context.clone().map(|plan| StoredPlan {
            plan,
            history: self.history,
        })
    }
}

/// One search result per conversation: its best-ranked match.
#[derive(Debug, Clone)]
pub struct StoredHit {
    pub conversation: Conversation,
    /// Empty when the title matched best.
    pub message_id: String,
    /// With «» around matches.
    pub snippet: String,
    /// Higher is better.
    pub score: f64,
}

/// A conversation with its messages, for bulk import (benchmarks, migrations).
#[derive(Debug, Clone)]
pub struct ImportItem {
    pub conversation: Conversation,
    pub messages: Vec<Message>,
}

#[async_trait::async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Short name for logs and benchmarks ("sqlite", "mongodb").
    fn backend(&self) -> &'static str;

    async fn create_conversation(&self, owner: &str, conversation: Conversation) -> Result<()>;
    async fn list_conversations(
        &self,
        owner: &str,
        q: &ConversationQuery,
    ) -> Result<Vec<Conversation>>;
    async fn get_conversation(&self, owner: &str, id: &str) -> Result<Option<Conversation>>;
    async fn update_conversation(
        &self,
        owner: &str,
        id: &str,
        patch: &ConversationPatch,
    ) -> Result<Option<Conversation>>;
    /// Deletes the conversation and its messages; the file ids their attachments referenced.
    async fn delete_conversation(&self, owner: &str, id: &str) -> Result<Option<Vec<String>>>;

    /// `None` when the conversation does not exist for this owner.
    async fn list_messages(
        &self,
        owner: &str,
        conversation_id: &str,
        q: &MessageQuery,
    ) -> Result<Option<Vec<StoredMessage>>>;
    async fn get_message(
        &self,
        owner: &str,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<Option<StoredMessage>>;
    /// Appends at the end of the conversation (next sequence number), counts it and
    /// moves the conversation's `updated_at` to the message's `created_at`.
    async fn append_message(&self, owner: &str, message: Message) -> Result<Option<Message>>;
    async fn update_message(
        &self,
        owner: &str,
        conversation_id: &str,
        message_id: &str,
        patch: &MessagePatch,
    ) -> Result<Option<Message>>;
    /// Records token counts in messages' ledgers (a model a ledger already has, or a
    /// full ledger, is left as it is).
    async fn add_token_counts(
        &self,
        owner: &str,
        conversation_id: &str,
        additions: Vec<LedgerAddition>,
    ) -> Result<()>;
    /// Marks messages after `from` (and `from` itself when inclusive) as superseded,
    /// with the conversation's next position as their `superseded_mark`; the ids newly marked. `None` when the conversation or message does not exist.
    async fn supersede_messages(
        &self,
        owner: &str,
        conversation_id: &str,
        from_message_id: &str,
        inclusive: bool,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>>;

    /// Conversations whose title or non-superseded messages contain every term, best first.
    async fn search(&self, owner: &str, terms: &[String], limit: u32) -> Result<Vec<StoredHit>>;

    /// Bulk insert of whole conversations (ids and sequence numbers as given, in order).
    async fn import(&self, owner: &str, items: Vec<ImportItem>) -> Result<()>;
}

/// File ids referenced by attachments, deduplicated, in first-seen order.
pub fn file_ids<'a>(attachments: impl IntoIterator<Item = &'a Attachment>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in attachments {
        if !a.file_id.is_empty() && !out.contains(&a.file_id) {
            out.push(a.file_id.clone());
        }
    }
    out
}
