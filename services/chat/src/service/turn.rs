//! Turn preparation: what a request asks for ([`TurnRequest`]), the one path `send`,
//! `regenerate` and `edit_and_resend` share ([`Chat::answer`]), and storing the user's
//! message and the answer's row while the model call starts ([`Chat::prepare`]).

use std::sync::Arc;

use confab_common::Identity;
use confab_proto::chat::v1 as chat;
use confab_proto::conversation::v1 as conv;
use tokio::time::Instant;

use super::Chat;
use super::downstream::{AttachedFiles, Conversations, HeldLease};
use super::run::AbortOnDrop;
use crate::context::{self, HistoryMessage, Plan, PlanInput};
use crate::error::ChatError;
use crate::provider::{ModelProvider, ModelRequest, ModelSpec, ModelStream, ProviderError, Role};
use crate::registry::{DetachedSlot, Generation};

const MAX_CONTENT_BYTES: usize = 256 * 1024;
const MAX_FILES_PER_MESSAGE: usize = 10;

/// What the turn answers.
pub(crate) enum Rewind {
    /// A new user message (in a new conversation when `conversation_id` is empty).
    None,
    /// The conversation's last user message, again; the answers after it are superseded.
    Regenerate,
    /// An edited copy of `message_id`; it and everything after it are superseded.
    Edit { message_id: String },
}

/// A request for an answer, whichever RPC it came from.
pub(crate) struct TurnRequest {
    pub conversation_id: String,
    pub content: String,
    pub file_ids: Vec<String>,
    pub model: String,
    pub system_prompt: String,
    pub detach: bool,
    pub rewind: Rewind,
}

impl From<chat::SendMessageRequest> for TurnRequest {
    fn from(r: chat::SendMessageRequest) -> Self {
        Self {
            conversation_id: r.conversation_id,
            content: r.content,
            file_ids: r.file_ids,
            model: r.model,
            system_prompt: r.system_prompt,
            detach: r.detach_on_disconnect,
            rewind: Rewind::None,
        }
    }
}

impl From<chat::RegenerateRequest> for TurnRequest {
    fn from(r: chat::RegenerateRequest) -> Self {
        Self {
            conversation_id: r.conversation_id,
            content: String::new(),
            file_ids: Vec::new(),
            model: r.model,
            system_prompt: String::new(),
            detach: r.detach_on_disconnect,
            rewind: Rewind::Regenerate,
        }
    }
}

impl From<chat::EditAndResendRequest> for TurnRequest {
    fn from(r: chat::EditAndResendRequest) -> Self {
        Self {
            conversation_id: r.conversation_id,
            content: r.content,
            file_ids: r.file_ids,
            model: r.model,
            system_prompt: String::new(),
            detach: r.detach_on_disconnect,
            rewind: Rewind::Edit {
                message_id: r.message_id,
            },
        }
    }
}

/// Everything [`Chat::prepare`] needs, gathered by [`Chat::answer`].
pub(crate) struct TurnInput {
    /// When the request arrived (time to first token counts from here).
    pub received: Instant,
    pub conversation: conv::Conversation,
    /// The conversation was created for this turn.
    pub created: bool,
    pub provider: Arc<dyn ModelProvider>,
    pub spec: ModelSpec,
    /// The messages before this turn's user message.
    pub history: Vec<conv::Message>,
    pub content: String,
    pub files: AttachedFiles,
    /// Set when an existing user message is answered again (regenerate).
    pub existing_user_message: Option<conv::Message>,
    /// For edit-and-resend: the original message.
    pub parent_id: String,
    /// Messages superseded before the new ones are stored: (from id, inclusive).
    pub supersede: Option<(String, bool)>,
    /// The first exchange of an untitled conversation: name it from `content`.
    pub name_conversation: bool,
}

/// A turn ready to stream: stored, its model call started, its quota held.
pub(crate) struct Turn {
    pub identity: Identity,
    pub conversation_id: String,
    pub created: bool,
    pub provider: Arc<dyn ModelProvider>,
    pub spec: ModelSpec,
    pub title_from: Option<String>,
    pub received: Instant,
    pub stored: Stored,
    pub lease: HeldLease,
    /// Held while a detached generation runs.
    pub detached: Option<DetachedSlot>,
}

/// What preparing stored and started.
pub(crate) struct Stored {
    pub generation_id: String,
    pub plan: Plan,
    pub user_message: conv::Message,
    pub assistant_message_id: String,
    pub upstream: AbortOnDrop<Result<ModelStream, ProviderError>>,
}

/// Deletes a conversation created for a turn that then failed, so a refused first
/// message leaves nothing behind; in the background if the request is dropped.
struct CreatedConversation {
    conversations: Conversations,
    identity: Identity,
    id: Option<String>,
}

impl CreatedConversation {
    fn disarm(mut self) {
        self.id = None;
    }

    async fn delete(mut self) {
        if let Some(id) = self.id.take() {
            remove(&self.conversations, &self.identity, &id).await;
        }
    }
}

impl Drop for CreatedConversation {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let conversations = self.conversations.clone();
            let identity = self.identity.clone();
            tokio::spawn(async move { remove(&conversations, &identity, &id).await });
        }
    }
}

async fn remove(conversations: &Conversations, identity: &Identity, id: &str) {
    if let Err(e) = conversations.delete(identity, id).await {
        tracing::warn!(error = %e, conversation = id, "could not delete the unanswered conversation");
    }
}

impl Chat {
    /// The one path of `send`, `regenerate` and `edit_and_resend`: load, rewind, resolve
    /// the model, take the quota, prepare, start.
    pub(crate) async fn answer(
        self: &Arc<Self>,
        id: &Identity,
        req: TurnRequest,
    ) -> Result<Arc<Generation>, ChatError> {
        let received = Instant::now();
        if !matches!(req.rewind, Rewind::Regenerate) {
            validate_content(&req.content, &req.file_ids)?;
        }
        let slot = self.detached_slot(id, req.detach)?;
        let (input, lease) = if matches!(req.rewind, Rewind::None) {
            // A new message: the quota decision, the conversation and its history load
            // together (the estimate uses the requested model, or the default).
            let (_, estimate_spec) = self.providers.resolve(&req.model)?;
            let estimate = estimated_tokens(&req.content, &estimate_spec);
            let (loaded, lease) =
                tokio::join!(self.load(id, &req), self.quota.acquire(id, estimate));
            let lease = HeldLease::new(&self.quota, id, lease?);
            let gathered = match loaded {
                Ok(loaded) => self.gather(id, req, loaded, received).await,
                Err(e) => Err(e),
            };
            match gathered {
                Ok(input) => (input, lease),
                Err(e) => {
                    lease.release(0).await;
                    return Err(e);
                }
            }
        } else {
            let loaded = self.load(id, &req).await?;
            let input = self.gather(id, req, loaded, received).await?;
            let estimate = estimated_tokens(&input.content, &input.spec);
            let lease = self.quota.acquire(id, estimate).await?;
            (input, HeldLease::new(&self.quota, id, lease))
        };
        let created = input.created.then(|| CreatedConversation {
            conversations: self.conversations.clone(),
            identity: id.clone(),
            id: Some(input.conversation.id.clone()),
        });
        match self.prepare(id, input, lease, slot).await {
            Ok(turn) => {
                if let Some(c) = created {
                    c.disarm();
                }
                Ok(self.start(turn))
            }
            Err(e) => {
                if let Some(c) = created {
                    c.delete().await;
                }
                Err(e)
            }
        }
    }

    /// The conversation (`None`: to be created) and its history.
    async fn load(
        &self,
        id: &Identity,
        req: &TurnRequest,
    ) -> Result<(Option<conv::Conversation>, Vec<conv::Message>), ChatError> {
        if req.conversation_id.is_empty() && matches!(req.rewind, Rewind::None) {
            return Ok((None, Vec::new()));
        }
        if matches!(req.rewind, Rewind::None) {
            let (c, h) = tokio::join!(
                self.conversations.get(id, &req.conversation_id),
                self.conversations.history(id, &req.conversation_id)
            );
            return Ok((Some(c?), h?));
        }
        let c = self.conversations.get(id, &req.conversation_id).await?;
        let h = self.conversations.history(id, &c.id).await?;
        Ok((Some(c), h))
    }

    /// Rewinds the history to the message answered, resolves the model, fetches the
    /// files and creates the conversation when it is new.
    async fn gather(
        &self,
        id: &Identity,
        req: TurnRequest,
        (conversation, mut history): (Option<conv::Conversation>, Vec<conv::Message>),
        received: Instant,
    ) -> Result<TurnInput, ChatError> {
        let mut content = req.content;
        let mut file_ids = req.file_ids;
        let mut existing_user_message = None;
        let mut parent_id = String::new();
        let mut supersede = None;
        match req.rewind {
            Rewind::None => {}
            Rewind::Regenerate => {
                let Some(pos) = history
                    .iter()
                    .rposition(|m| m.role == conv::Role::User as i32)
                else {
                    return Err(ChatError::FailedPrecondition(
                        "there is no message to answer again in this conversation".into(),
                    ));
                };
                let user = history[pos].clone();
                history.truncate(pos);
                content.clone_from(&user.content);
                file_ids = user.attachments.iter().map(|a| a.file_id.clone()).collect();
                supersede = Some((user.id.clone(), false));
                existing_user_message = Some(user);
            }
            Rewind::Edit { message_id } => {
                let Some(pos) = history
                    .iter()
                    .position(|m| m.id == message_id && m.role == conv::Role::User as i32)
                else {
                    return Err(ChatError::NotFound(format!(
                        "no user message {message_id:?} in this conversation"
                    )));
                };
                history.truncate(pos);
                supersede = Some((message_id.clone(), true));
                parent_id = message_id;
            }
        }
        let model = pick_model(&req.model, conversation.as_ref());
        let (provider, spec) = self.providers.resolve(&model)?;
        let created = conversation.is_none();
        let (conversation, files) = tokio::join!(
            async {
                match conversation {
                    Some(c) => Ok(c),
                    None => {
                        self.conversations
                            .create(id, &req.model, &req.system_prompt)
                            .await
                    }
                }
            },
            self.files.prompt_parts(id, &file_ids, spec.vision)
        );
        // A conversation created beside a failed file lookup is deleted with the turn.
        let (conversation, files) = match (conversation, files) {
            (Ok(c), Ok(files)) => (c, files),
            (Ok(c), Err(e)) => {
                if created {
                    remove(&self.conversations, id, &c.id).await;
                }
                return Err(e);
            }
            (Err(e), _) => return Err(e),
        };
        let name_conversation =
            existing_user_message.is_none() && !conversation.title_set && history.is_empty();
        Ok(TurnInput {
            received,
            conversation,
            created,
            provider,
            spec,
            history,
            content,
            files,
            existing_user_message,
            parent_id,
            supersede,
            name_conversation,
        })
    }

    /// Stores the turn and starts its model call; on failure gives the lease back.
    async fn prepare(
        &self,
        id: &Identity,
        mut input: TurnInput,
        lease: HeldLease,
        detached: Option<DetachedSlot>,
    ) -> Result<Turn, ChatError> {
        let stored = match self.store(id, &mut input).await {
            Ok(s) => s,
            Err(e) => {
                lease.release(0).await;
                return Err(e);
            }
        };
        Ok(Turn {
            identity: id.clone(),
            conversation_id: input.conversation.id,
            created: input.created,
            provider: input.provider,
            spec: input.spec,
            title_from: input.name_conversation.then_some(input.content),
            received: input.received,
            stored,
            lease,
            detached,
        })
    }

    /// Plans the context, stores the user's message (unless answered again) and the
    /// answer's row, and starts the model call.
    async fn store(&self, id: &Identity, input: &mut TurnInput) -> Result<Stored, ChatError> {
        let TurnInput {
            conversation,
            provider,
            spec,
            history,
            content,
            files,
            existing_user_message,
            parent_id,
            supersede,
            ..
        } = input;
        provider.prepare(&spec.id).await?;
        let plan_input = PlanInput {
            system_prompt: conversation.system_prompt.clone(),
            history: history
                .iter()
                .filter(|m| usable_in_history(m))
                .map(|m| HistoryMessage {
                    id: m.id.clone(),
                    role: if m.role == conv::Role::Assistant as i32 {
                        Role::Assistant
                    } else {
                        Role::User
                    },
                    text: history_text(m),
                })
                .collect(),
            current_id: String::new(),
            current_text: content.clone(),
            files: std::mem::take(&mut files.inputs),
        };
        let counter = |t: &str| provider.count_tokens(&spec.id, t);
        let mut plan = context::plan(spec, &plan_input, &counter)?;

        if let Some((from, inclusive)) = supersede.take() {
            self.conversations
                .supersede(id, &conversation.id, &from, inclusive)
                .await?;
        }
        let user_message = match existing_user_message.take() {
            Some(m) => m,
            None => {
                self.conversations
                    .append(
                        id,
                        conv::AppendMessageRequest {
                            conversation_id: conversation.id.clone(),
                            role: conv::Role::User as i32,
                            content: content.clone(),
                            status: conv::MessageStatus::Complete as i32,
                            attachments: std::mem::take(&mut files.attachments),
                            model: String::new(),
                            parent_id: std::mem::take(parent_id),
                            generation_id: String::new(),
                        },
                    )
                    .await?
            }
        };
        if let Some(last) = plan.context.messages.last_mut() {
            last.message_id.clone_from(&user_message.id);
        }
        // The user message is stored: the model call starts while the answer's row is created.
        let upstream = {
            let provider = provider.clone();
            let request = ModelRequest {
                model: spec.id.clone(),
                messages: plan.messages.clone(),
                max_output_tokens: plan.max_output_tokens,
            };
            // The user is who the embedded model's queue shares the CPU between.
            let user = id.user_id.clone();
            AbortOnDrop(tokio::spawn(async move {
                provider.stream_for(&user, request).await
            }))
        };
        let generation_id = uuid::Uuid::now_v7().to_string();
        let assistant = self
            .conversations
            .append(
                id,
                conv::AppendMessageRequest {
                    conversation_id: conversation.id.clone(),
                    role: conv::Role::Assistant as i32,
                    content: String::new(),
                    status: conv::MessageStatus::Streaming as i32,
                    attachments: vec![],
                    model: spec.id.clone(),
                    parent_id: user_message.id.clone(),
                    generation_id: generation_id.clone(),
                },
            )
            .await?;
        Ok(Stored {
            generation_id,
            plan,
            user_message,
            assistant_message_id: assistant.id,
            upstream,
        })
    }
}

/// Reserved for the turn before it runs: the message's tokens and room for the answer.
fn estimated_tokens(content: &str, spec: &ModelSpec) -> u32 {
    crate::tokens::estimate(content) + context::answer_reserve(spec)
}

fn validate_content(content: &str, file_ids: &[String]) -> Result<(), ChatError> {
    if content.trim().is_empty() && file_ids.is_empty() {
        return Err(ChatError::InvalidArgument(
            "the message is empty; write something or attach a file".into(),
        ));
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(ChatError::InvalidArgument(format!(
            "the message is {} KB; the limit is {} KB",
            content.len() / 1024,
            MAX_CONTENT_BYTES / 1024
        )));
    }
    if file_ids.len() > MAX_FILES_PER_MESSAGE {
        return Err(ChatError::InvalidArgument(format!(
            "{} files attached; the limit is {MAX_FILES_PER_MESSAGE} per message",
            file_ids.len()
        )));
    }
    Ok(())
}

fn pick_model(requested: &str, conversation: Option<&conv::Conversation>) -> String {
    if !requested.is_empty() {
        return requested.to_owned();
    }
    conversation.map(|c| c.model.clone()).unwrap_or_default()
}

fn usable_in_history(m: &conv::Message) -> bool {
    let status = m.status;
    !m.content.is_empty()
        && status != conv::MessageStatus::Streaming as i32
        && (m.role == conv::Role::User as i32 || m.role == conv::Role::Assistant as i32)
}

fn history_text(m: &conv::Message) -> String {
    if m.attachments.is_empty() {
        return m.content.clone();
    }
    let names: Vec<&str> = m.attachments.iter().map(|a| a.filename.as_str()).collect();
    format!("{}\n\n[attached earlier: {}]", m.content, names.join(", "))
}
