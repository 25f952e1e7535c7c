//! The chat domain: prepares a turn (quota, conversation, files, history, plan, stored
//! messages), then runs the generation in its own task, publishing sequenced events to
//! the registry, storing the answer as it streams and reconciling the token budget.

use std::sync::Arc;
use std::time::Duration;

use confab_common::{GrpcChannel, Identity};
use confab_proto::chat::v1 as chat;
use confab_proto::conversation::v1 as conv;
use confab_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use confab_proto::files::v1 as files;
use confab_proto::files::v1::file_service_client::FileServiceClient;
use confab_proto::ratelimit::v1 as rl;
use confab_proto::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use crate::context::{self, FileInput, HistoryMessage, Plan, PlanInput, TextPart};
use crate::error::ChatError;
use crate::metrics::Metrics;
use crate::provider::ModelStream;
use crate::provider::{
    Finish, ModelEvent, ModelProvider, ModelRequest, ModelSpec, PromptMessage, ProviderError, Role,
    Usage,
};
use crate::registry::{DetachedSlot, Generation, Registry};
use crate::{ChatDeps, Config};

const MAX_CONTENT_BYTES: usize = 256 * 1024;
const MAX_FILES_PER_MESSAGE: usize = 10;
const HISTORY_PAGE: u32 = 200;
const HISTORY_MAX_PAGES: usize = 5;
/// Largest text of one Delta event built from deltas that were already waiting.
const MAX_COALESCED_BYTES: usize = 4096;
const TITLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The providers this instance can use, and which model is the default.
pub struct Providers {
    list: Vec<Arc<dyn ModelProvider>>,
    default_model: String,
}

impl Providers {
    pub fn new(list: Vec<Arc<dyn ModelProvider>>) -> Self {
        let default_model = list.first().map(|p| p.default_model()).unwrap_or_default();
        Self {
            list,
            default_model,
        }
    }

    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    pub fn resolve(&self, model: &str) -> Result<(Arc<dyn ModelProvider>, ModelSpec), ChatError> {
        let model = if model.is_empty() {
            &self.default_model
        } else {
            model
        };
        for p in &self.list {
            if let Some(spec) = p.models().into_iter().find(|m| m.id == model) {
                return Ok((p.clone(), spec));
            }
        }
        Err(ChatError::InvalidArgument(format!(
            "unknown model {model:?}; ListModels shows the available ones"
        )))
    }

    pub fn all(&self) -> Vec<ModelSpec> {
        self.list.iter().flat_map(|p| p.models()).collect()
    }
}

pub struct Chat {
    config: Config,
    providers: Providers,
    registry: Arc<Registry>,
    metrics: Metrics,
    conversation: ConversationServiceClient<GrpcChannel>,
    files: FileServiceClient<GrpcChannel>,
    ratelimit: RateLimitServiceClient<GrpcChannel>,
}

/// What the user asked for in this turn.
struct Ask {
    /// When the request arrived (time to first token counts from here).
    received: Instant,
    content: String,
    files: AttachedFiles,
    /// Set when an existing user message is answered again (regenerate).
    existing_user_message: Option<conv::Message>,
    /// For edit-and-resend: the original message.
    parent_id: String,
}

#[derive(Default)]
struct AttachedFiles {
    attachments: Vec<conv::Attachment>,
    inputs: Vec<FileInput>,
}

/// A turn ready to stream.
pub struct Turn {
    identity: Identity,
    conversation_id: String,
    provider: Arc<dyn ModelProvider>,
    spec: ModelSpec,
    plan: Plan,
    user_message: conv::Message,
    assistant_message_id: String,
    lease: Lease,
    created: bool,
    title_from: Option<String>,
    upstream: AbortOnDrop<Result<ModelStream, ProviderError>>,
    received: Instant,
    /// Held while a detached generation runs.
    detached: Option<DetachedSlot>,
}

/// How often the answer's text goes to the client while the model is fast: once per
/// display frame (60 Hz). The first text goes at once; later deltas arriving within a
/// frame of the last event travel together, so a fast model costs one event per frame
/// instead of one per token, and nobody sees the difference.
const FRAME: Duration = Duration::from_millis(16);

/// The answer as it streams: what was published, and deltas held for the next frame.
struct Relay {
    text: String,
    pending: String,
    first_token: bool,
    last_sent: Option<Instant>,
    /// When the held deltas go out (set while some are held).
    flush_at: Option<Instant>,
    saved_len: usize,
    last_save: Instant,
}

impl Relay {
    /// Deltas were added to `pending`: sent now unless the last event went out less
    /// than a frame ago (then at the end of that frame) and there is little text held.
    fn delta_received(&mut self, chat: &Arc<Chat>, turn: &Turn, g: &Generation) {
        let due = self.last_sent.is_none_or(|at| at.elapsed() >= FRAME);
        if due || self.pending.len() >= MAX_COALESCED_BYTES {
            self.flush(chat, turn, g);
        } else if self.flush_at.is_none() {
            self.flush_at = self.last_sent.map(|at| at + FRAME);
        }
    }

    /// Publishes the held deltas as one event (and saves progress now and then).
    fn flush(&mut self, chat: &Arc<Chat>, turn: &Turn, g: &Generation) {
        self.flush_at = None;
        if self.pending.is_empty() {
            return;
        }
        if self.first_token {
            self.first_token = false;
            chat.metrics
                .time_to_first_token(&turn.spec.id, turn.received.elapsed().as_secs_f64());
        }
        self.text.push_str(&self.pending);
        g.publish(delta(&self.pending));
        self.pending.clear();
        self.last_sent = Some(Instant::now());
        if self.last_save.elapsed() >= chat.config.save_interval && self.text.len() > self.saved_len
        {
            self.last_save = Instant::now();
            self.saved_len = self.text.len();
            chat.save_progress(&turn.identity, turn, &self.text);
        }
    }
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Releases a lease (0 tokens) if the request is dropped (the client went away)
/// before the generation took it over.
struct ReleaseOnDrop {
    chat: Arc<Chat>,
    identity: Identity,
    lease: Option<Lease>,
}

impl ReleaseOnDrop {
    fn new(chat: &Arc<Chat>, identity: &Identity, lease: Lease) -> Self {
        Self {
            chat: chat.clone(),
            identity: identity.clone(),
            lease: Some(lease),
        }
    }

    fn disarm(mut self) -> Lease {
        self.lease.take().expect("armed")
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let chat = self.chat.clone();
            let identity = self.identity.clone();
            tokio::spawn(async move { chat.release(&identity, &lease, 0).await });
        }
    }
}

struct Lease {
    subject: String,
    reservation_id: String,
    lease_id: String,
    ttl_seconds: u32,
}

fn is_unimplemented(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unimplemented
}

impl Chat {
    pub fn new(config: Config, providers: Providers, deps: ChatDeps) -> Self {
        Self {
            providers,
            registry: Arc::new(Registry::new(config.max_detached_per_user)),
            metrics: Metrics::global(),
            conversation: ConversationServiceClient::new(deps.conversation),
            files: FileServiceClient::new(deps.files),
            ratelimit: RateLimitServiceClient::new(deps.ratelimit),
            config,
        }
    }

    /// One of the user's detached-generation slots when `detach` is asked for.
    fn detached_slot(
        &self,
        id: &Identity,
        detach: bool,
    ) -> Result<Option<DetachedSlot>, ChatError> {
        if !detach {
            return Ok(None);
        }
        self.registry
            .try_detach(&id.user_id)
            .map(Some)
            .ok_or_else(|| ChatError::RateLimited {
                message: format!(
                    "{} answers are already running for you; wait for one to finish or stop it",
                    self.config.max_detached_per_user
                ),
                retry_after_seconds: 5,
            })
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    // ---- public operations ---------------------------------------------------------

    pub async fn send(
        self: &Arc<Self>,
        id: &Identity,
        req: chat::SendMessageRequest,
    ) -> Result<Arc<Generation>, ChatError> {
        let received = Instant::now();
        validate_content(&req.content, &req.file_ids)?;
        let slot = self.detached_slot(id, req.detach_on_disconnect)?;
        let created = req.conversation_id.is_empty();
        // The quota decision, the conversation and its history load together.
        let (_, estimate_spec) = self.providers.resolve(&req.model)?;
        let load = async {
            if created {
                Ok(None)
            } else {
                self.get_conversation(id, &req.conversation_id)
                    .await
                    .map(Some)
            }
        };
        let history = async {
            if created {
                Ok(Vec::new())
            } else {
                self.history(id, &req.conversation_id).await
            }
        };
        let (conversation, history, lease) = tokio::join!(
            load,
            history,
            self.acquire(id, &req.content, &estimate_spec)
        );
        let lease = ReleaseOnDrop::new(self, id, lease?);
        let result = async {
            let conversation = conversation?;
            let model = pick_model(&req.model, conversation.as_ref());
            let (provider, spec) = self.providers.resolve(&model)?;
            let (conversation, files) = tokio::join!(
                async {
                    match conversation {
                        Some(c) => Ok(c),
                        None => self
                            .conversation
                            .clone()
                            .create_conversation(id.request(conv::CreateConversationRequest {
                                title: String::new(),
                                model: req.model.clone(),
                                system_prompt: req.system_prompt.clone(),
                            }))
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(ChatError::downstream("conversation")),
                    }
                },
                self.fetch_files(id, &req.file_ids, spec.vision)
            );
            let conversation = conversation?;
            let history = history?;
            let first = !conversation.title_set && history.is_empty();
            let ask = Ask {
                received,
                content: req.content.clone(),
                files: files?,
                existing_user_message: None,
                parent_id: String::new(),
            };
            self.prepare(
                id,
                conversation,
                created,
                provider,
                spec,
                history,
                ask,
                None,
                first,
            )
            .await
        }
        .await;
        self.start_or_release(id, lease, result, slot).await
    }

    pub async fn regenerate(
        self: &Arc<Self>,
        id: &Identity,
        req: chat::RegenerateRequest,
    ) -> Result<Arc<Generation>, ChatError> {
        let received = Instant::now();
        let slot = self.detached_slot(id, req.detach_on_disconnect)?;
        let conversation = self.get_conversation(id, &req.conversation_id).await?;
        let mut history = self.history(id, &conversation.id).await?;
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
        let model = pick_model(&req.model, Some(&conversation));
        let (provider, spec) = self.providers.resolve(&model)?;
        let file_ids: Vec<String> = user.attachments.iter().map(|a| a.file_id.clone()).collect();
        let files = self.fetch_files(id, &file_ids, spec.vision).await?;
        let lease = ReleaseOnDrop::new(self, id, self.acquire(id, &user.content, &spec).await?);
        let ask = Ask {
            received,
            content: user.content.clone(),
            files,
            existing_user_message: Some(user.clone()),
            parent_id: String::new(),
        };
        let supersede = Some((user.id.clone(), false));
        let result = self
            .prepare(
                id,
                conversation,
                false,
                provider,
                spec,
                history,
                ask,
                supersede,
                false,
            )
            .await;
        self.start_or_release(id, lease, result, slot).await
    }

    pub async fn edit_and_resend(
        self: &Arc<Self>,
        id: &Identity,
        req: chat::EditAndResendRequest,
    ) -> Result<Arc<Generation>, ChatError> {
        let received = Instant::now();
        validate_content(&req.content, &req.file_ids)?;
        let slot = self.detached_slot(id, req.detach_on_disconnect)?;
        let conversation = self.get_conversation(id, &req.conversation_id).await?;
        let mut history = self.history(id, &conversation.id).await?;
        let Some(pos) = history
            .iter()
            .position(|m| m.id == req.message_id && m.role == conv::Role::User as i32)
        else {
            return Err(ChatError::NotFound(format!(
                "no user message {:?} in this conversation",
                req.message_id
            )));
        };
        history.truncate(pos);
        let model = pick_model(&req.model, Some(&conversation));
        let (provider, spec) = self.providers.resolve(&model)?;
        let files = self.fetch_files(id, &req.file_ids, spec.vision).await?;
        let lease = ReleaseOnDrop::new(self, id, self.acquire(id, &req.content, &spec).await?);
        let ask = Ask {
            received,
            content: req.content.clone(),
            files,
            existing_user_message: None,
            parent_id: req.message_id.clone(),
        };
        let supersede = Some((req.message_id.clone(), true));
        let first = !conversation.title_set && history.is_empty();
        let result = self
            .prepare(
                id,
                conversation,
                false,
                provider,
                spec,
                history,
                ask,
                supersede,
                first,
            )
            .await;
        self.start_or_release(id, lease, result, slot).await
    }

    pub async fn stop(&self, id: &Identity, generation_id: &str) -> Result<bool, ChatError> {
        let g = self
            .registry
            .get(generation_id, &id.user_id)
            .ok_or_else(|| ChatError::NotFound(format!("no generation {generation_id:?}")))?;
        if g.is_finished() {
            return Ok(false);
        }
        g.cancel.cancel();
        // Wait (briefly) until the partial answer is stored, so a reload shows it.
        let mut events = Box::pin(g.subscribe(u64::MAX - 1, false));
        let _ = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
        Ok(true)
    }

    pub fn attach(
        &self,
        id: &Identity,
        req: &chat::AttachRequest,
    ) -> Result<Arc<Generation>, ChatError> {
        let g = self
            .registry
            .get(&req.generation_id, &id.user_id)
            .ok_or_else(|| {
                ChatError::NotFound(format!(
                    "no running or recent generation {:?}",
                    req.generation_id
                ))
            })?;
        if req.after_sequence + 1 < g.first_buffered() {
            return Err(ChatError::FailedPrecondition(format!(
                "events before {} are no longer buffered; reload the message instead",
                g.first_buffered()
            )));
        }
        Ok(g)
    }

    pub async fn quota(&self, id: &Identity) -> Result<rl::Quota, ChatError> {
        self.ratelimit
            .clone()
            .get_quota(id.request(rl::GetQuotaRequest {
                subject: Some(rl::Subject {
                    key: id.rate_limit_subject(),
                }),
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(ChatError::downstream("rate-limit"))
    }

    pub async fn get_message(
        &self,
        id: &Identity,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<conv::Message, ChatError> {
        self.conversation
            .clone()
            .get_message(id.request(conv::GetMessageRequest {
                conversation_id: conversation_id.to_owned(),
                message_id: message_id.to_owned(),
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(ChatError::downstream("conversation"))
    }

    // ---- preparation ---------------------------------------------------------------

    async fn get_conversation(
        &self,
        id: &Identity,
        conversation_id: &str,
    ) -> Result<conv::Conversation, ChatError> {
        self.conversation
            .clone()
            .get_conversation(id.request(conv::GetConversationRequest {
                conversation_id: conversation_id.to_owned(),
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(ChatError::downstream("conversation"))
    }

    /// Non-superseded messages, oldest first (the newest pages, at most).
    async fn history(
        &self,
        id: &Identity,
        conversation_id: &str,
    ) -> Result<Vec<conv::Message>, ChatError> {
        let mut out = Vec::new();
        let mut token = String::new();
        for _ in 0..HISTORY_MAX_PAGES {
            let page = self
                .conversation
                .clone()
                .list_messages(id.request(conv::ListMessagesRequest {
                    conversation_id: conversation_id.to_owned(),
                    page_size: HISTORY_PAGE,
                    page_token: token.clone(),
                    include_superseded: false,
                    newest_first: true,
                    omit_context: true,
                }))
                .await
                .map(tonic::Response::into_inner)
                .map_err(ChatError::downstream("conversation"))?;
            out.extend(page.messages);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        out.retain(|m| !m.superseded);
        out.reverse();
        Ok(out)
    }

    async fn acquire(
        &self,
        id: &Identity,
        content: &str,
        spec: &ModelSpec,
    ) -> Result<Lease, ChatError> {
        let subject = id.rate_limit_subject();
        let estimated = crate::tokens::estimate(content) + context::answer_reserve(spec);
        let resp = self
            .ratelimit
            .clone()
            .acquire(id.request(rl::AcquireRequest {
                subject: Some(rl::Subject {
                    key: subject.clone(),
                }),
                estimated_tokens: estimated,
                open_stream: true,
                request_id: uuid::Uuid::now_v7().to_string(),
            }))
            .await
            .map(tonic::Response::into_inner);
        let resp = match resp {
            Ok(r) => r,
            // A deployment without the rate-limit service (or an old one) still chats.
            Err(s) if is_unimplemented(&s) => {
                tracing::warn!("rate-limit service unimplemented; request admitted");
                return Ok(Lease {
                    subject,
                    reservation_id: String::new(),
                    lease_id: String::new(),
                    ttl_seconds: 0,
                });
            }
            Err(s) => return Err(ChatError::downstream("rate-limit")(s)),
        };
        if !resp.allowed {
            let message = if resp.message.is_empty() {
                "rate limit reached; try again later".to_owned()
            } else {
                resp.message
            };
            return Err(ChatError::RateLimited {
                message,
                retry_after_seconds: resp.retry_after_seconds,
            });
        }
        Ok(Lease {
            subject,
            reservation_id: resp.reservation_id,
            lease_id: resp.lease_id,
            ttl_seconds: resp.lease_ttl_seconds,
        })
    }

    async fn release(&self, id: &Identity, lease: &Lease, actual_tokens: u32) {
        if lease.reservation_id.is_empty() && lease.lease_id.is_empty() {
            return;
        }
        let r = self
            .ratelimit
            .clone()
            .release(id.request(rl::ReleaseRequest {
                subject: Some(rl::Subject {
                    key: lease.subject.clone(),
                }),
                reservation_id: lease.reservation_id.clone(),
                lease_id: lease.lease_id.clone(),
                actual_tokens,
            }))
            .await
            .map(tonic::Response::into_inner);
        if let Err(e) = r {
            tracing::warn!(error = %e, "rate-limit release failed; the lease will expire");
        }
    }

    async fn start_or_release(
        self: &Arc<Self>,
        id: &Identity,
        guard: ReleaseOnDrop,
        prepared: Result<PreparedTurn, ChatError>,
        detached: Option<DetachedSlot>,
    ) -> Result<Arc<Generation>, ChatError> {
        let lease = guard.disarm();
        match prepared {
            Ok(p) => Ok(self.start(p.into_turn(lease, detached))),
            Err(e) => {
                self.release(id, &lease, 0).await;
                Err(e)
            }
        }
    }

    /// Files → attachment metadata and planner input (NOT_FOUND for unknown ids).
    async fn fetch_files(
        &self,
        id: &Identity,
        file_ids: &[String],
        vision: bool,
    ) -> Result<AttachedFiles, ChatError> {
        let mut out = AttachedFiles::default();
        if file_ids.is_empty() {
            return Ok(out);
        }
        let parts = self
            .files
            .clone()
            .get_prompt_parts(id.request(files::GetPromptPartsRequest {
                file_ids: file_ids.to_vec(),
                include_images: vision,
                max_image_side: 0,
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(ChatError::downstream("files"))?;
        for f in parts.files {
            let info = f.file.unwrap_or_default();
            let is_image = info.kind == files::FileKind::Image as i32;
            out.attachments.push(conv::Attachment {
                file_id: info.id.clone(),
                filename: info.filename.clone(),
                mime_type: info.mime_type.clone(),
                size_bytes: info.size_bytes,
                is_image,
            });
            out.inputs.push(FileInput {
                file_id: info.id,
                filename: info.filename,
                text_parts: f
                    .text_parts
                    .into_iter()
                    .map(|p| TextPart {
                        label: p.label,
                        text: p.text,
                    })
                    .collect(),
                image: is_image.then(|| f.image.map(|i| i.data_url).unwrap_or_default()),
            });
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn prepare(
        &self,
        id: &Identity,
        conversation: conv::Conversation,
        created: bool,
        provider: Arc<dyn ModelProvider>,
        spec: ModelSpec,
        history: Vec<conv::Message>,
        ask: Ask,
        supersede: Option<(String, bool)>,
        first_exchange: bool,
    ) -> Result<PreparedTurn, ChatError> {
        let AttachedFiles {
            attachments,
            inputs: file_inputs,
        } = ask.files;
        provider.prepare(&spec.id).await?;
        let system_prompt = conversation.system_prompt.clone();
        let input = PlanInput {
            system_prompt,
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
            current_text: ask.content.clone(),
            files: file_inputs,
        };
        let counter = |t: &str| provider.count_tokens(&spec.id, t);
        let mut plan = context::plan(&spec, &input, &counter)?;

        if let Some((from, inclusive)) = supersede {
            self.conversation
                .clone()
                .supersede_messages(id.request(conv::SupersedeMessagesRequest {
                    conversation_id: conversation.id.clone(),
                    from_message_id: from,
                    inclusive,
                }))
                .await
                .map(tonic::Response::into_inner)
                .map_err(ChatError::downstream("conversation"))?;
        }
        let user_message = match ask.existing_user_message {
            Some(m) => m,
            None => self
                .conversation
                .clone()
                .append_message(id.request(conv::AppendMessageRequest {
                    conversation_id: conversation.id.clone(),
                    role: conv::Role::User as i32,
                    content: ask.content.clone(),
                    status: conv::MessageStatus::Complete as i32,
                    attachments,
                    model: String::new(),
                    parent_id: ask.parent_id.clone(),
                    generation_id: String::new(),
                }))
                .await
                .map(tonic::Response::into_inner)
                .map_err(ChatError::downstream("conversation"))?,
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
            AbortOnDrop(tokio::spawn(async move { provider.stream(request).await }))
        };
        let generation_id = uuid::Uuid::now_v7().to_string();
        let assistant = self
            .conversation
            .clone()
            .append_message(id.request(conv::AppendMessageRequest {
                conversation_id: conversation.id.clone(),
                role: conv::Role::Assistant as i32,
                content: String::new(),
                status: conv::MessageStatus::Streaming as i32,
                attachments: vec![],
                model: spec.id.clone(),
                parent_id: user_message.id.clone(),
                generation_id: generation_id.clone(),
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(ChatError::downstream("conversation"))?;
        Ok(PreparedTurn {
            identity: id.clone(),
            conversation_id: conversation.id,
            provider,
            spec,
            plan,
            user_message,
            assistant_message_id: assistant.id,
            generation_id,
            created,
            title_from: first_exchange.then_some(ask.content),
            upstream,
            received: ask.received,
        })
    }

    // ---- generation ----------------------------------------------------------------

    fn start(self: &Arc<Self>, p: (Turn, String)) -> Arc<Generation> {
        let (turn, generation_id) = p;
        let g = self.registry.start(
            generation_id,
            turn.identity.user_id.clone(),
            turn.conversation_id.clone(),
            turn.detached.is_some(),
        );
        g.publish(event(chat::chat_event::Event::Started(chat::Started {
            user_message_id: turn.user_message.id.clone(),
            assistant_message_id: turn.assistant_message_id.clone(),
            model: turn.spec.id.clone(),
            provider: turn.provider.name().to_owned(),
            embedded_model: turn.spec.embedded,
            context: Some(turn.plan.context.clone()),
            conversation_created: turn.created,
        })));
        let this = self.clone();
        let g2 = g.clone();
        tokio::spawn(async move {
            let slot = this.run(turn, &g2).await;
            this.registry.finish(&g2);
            drop((slot, g2));
            // Nobody may ever re-attach: drop it from the registry when its time is up.
            let registry = this.registry.clone();
            drop(this);
            tokio::time::sleep(registry.ttl()).await;
            registry.expire();
        });
        g
    }

    /// Runs the generation to its end; gives back the detached slot to drop after finish.
    async fn run(self: &Arc<Self>, mut turn: Turn, g: &Generation) -> Option<DetachedSlot> {
        let detached = turn.detached.take();
        let id = &turn.identity;
        let title_task = turn.title_from.clone().map(|text| {
            let provider = turn.provider.clone();
            tokio::spawn(async move { make_title(provider.as_ref(), &text).await })
        });

        let mut text = String::new();
        if !turn.plan.unseen_images.is_empty() {
            let note = format!(
                "_I can't see images: {} reads text only, so I could not look at {}._\n\n",
                turn.spec.display_name,
                turn.plan.unseen_images.join(", ")
            );
            g.publish(delta(&note));
            text.push_str(&note);
        }

        let mut out = Relay {
            saved_len: text.len(),
            text,
            pending: String::new(),
            first_token: true,
            last_sent: None,
            flush_at: None,
            last_save: Instant::now(),
        };
        let mut usage: Option<Usage> = None;
        let mut finish = Finish::Stop;
        let mut stopped = false;
        let mut failure: Option<ProviderError> = None;
        let renew_every = Duration::from_secs(u64::from(turn.lease.ttl_seconds.max(2) / 2));
        let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);

        let stream = tokio::select! {
            _ = g.cancel.cancelled() => None,
            s = &mut turn.upstream.0 => Some(s.unwrap_or_else(|e| {
                Err(ProviderError::Internal(format!("model call panicked: {e}")))
            })),
        };
        turn.upstream.0.abort();
        match stream {
            None => stopped = true,
            Some(Err(e)) => failure = Some(e),
            Some(Ok(mut stream)) => {
                // An event read ahead while coalescing deltas, handled next.
                let mut carry = None;
                loop {
                    let ev = match carry.take() {
                        Some(ev) => ev,
                        None => tokio::select! {
                            biased;
                            _ = g.cancel.cancelled() => { stopped = true; break; }
                            _ = tokio::time::sleep_until(out.flush_at.unwrap_or_else(Instant::now)),
                                if out.flush_at.is_some() => {
                                out.flush(self, &turn, g);
                                continue;
                            }
                            ev = stream.next() => ev,
                            _ = renew.tick(), if !turn.lease.lease_id.is_empty() => {
                                self.renew(id, &turn.lease);
                                continue;
                            }
                        },
                    };
                    match ev {
                        Some(Ok(ModelEvent::Delta(t))) => {
                            out.pending.push_str(&t);
                            // Deltas already waiting join it (fewer frames when the
                            // upstream is faster than the client).
                            while out.pending.len() < MAX_COALESCED_BYTES {
                                match stream.next().now_or_never() {
                                    Some(Some(Ok(ModelEvent::Delta(more)))) => {
                                        out.pending.push_str(&more)
                                    }
                                    Some(other) => {
                                        carry = Some(other);
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            out.delta_received(self, &turn, g);
                        }
                        Some(Ok(ModelEvent::Usage(u))) => usage = Some(u),
                        Some(Ok(ModelEvent::Finished(f))) => finish = f,
                        Some(Err(e)) => {
                            failure = Some(e);
                            break;
                        }
                        None => break,
                    }
                }
            }
        }
        // What arrived is kept, also when stopped or failed.
        out.flush(self, &turn, g);
        let text = out.text;
        // The upstream stream is dropped here: the HTTP response or decode thread ends.

        let usage = usage.unwrap_or_else(|| {
            let completion = turn.provider.count_tokens(&turn.spec.id, &text);
            let prompt = if failure.is_some() && text.is_empty() {
                0
            } else {
                turn.plan.context.total_prompt_tokens
            };
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            }
        });
        let (status, error_message) = match (&failure, stopped) {
            (Some(e), _) => (conv::MessageStatus::Failed, e.to_string()),
            (None, true) => (conv::MessageStatus::Stopped, String::new()),
            (None, false) => (conv::MessageStatus::Complete, String::new()),
        };
        let saved = self
            .conversation
            .clone()
            .update_message(id.request(conv::UpdateMessageRequest {
                conversation_id: turn.conversation_id.clone(),
                message_id: turn.assistant_message_id.clone(),
                content: Some(text.clone()),
                status: Some(status as i32),
                usage: Some(conv::TokenUsage {
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    total_tokens: usage.total_tokens,
                }),
                context: Some(turn.plan.context.clone()),
                model: None,
                error_message: (!error_message.is_empty()).then_some(error_message),
            }))
            .await
            .map(tonic::Response::into_inner);
        self.metrics
            .tokens(&turn.spec.id, usage.prompt_tokens, usage.completion_tokens);

        let chat_usage = chat::Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
        };
        if usage.total_tokens > 0 {
            g.publish(event(chat::chat_event::Event::Usage(chat_usage)));
        }
        // The title's tokens count against the user's budget too: one release covers both.
        let mut title_tokens = 0;
        if let Some(task) = title_task
            && let Ok(Ok(made)) = tokio::time::timeout(TITLE_TIMEOUT, task).await
        {
            let Title {
                text: title,
                model,
                usage: title_usage,
            } = made;
            if let (Some(model), Some(u)) = (model, title_usage) {
                title_tokens = u.total_tokens;
                self.metrics
                    .tokens(&model, u.prompt_tokens, u.completion_tokens);
            }
            let r = self
                .conversation
                .clone()
                .update_conversation(id.request(conv::UpdateConversationRequest {
                    conversation_id: turn.conversation_id.clone(),
                    title: Some(title.clone()),
                    ..Default::default()
                }))
                .await
                .map(tonic::Response::into_inner);
            match r {
                Ok(_) => {
                    g.publish(event(chat::chat_event::Event::TitleUpdated(
                        chat::TitleUpdated { title },
                    )));
                }
                Err(e) => tracing::warn!(error = %e, "could not name the conversation"),
            }
        }
        self.release(
            id,
            &turn.lease,
            usage.total_tokens.saturating_add(title_tokens),
        )
        .await;

        let last = if let Err(e) = saved {
            tracing::error!(error = %e, "could not store the answer");
            chat::chat_event::Event::Failed(chat::Failed {
                code: chat::FailureCode::Internal as i32,
                message: "the answer could not be saved; try again".into(),
                retryable: true,
                retry_after_seconds: 0,
                assistant_message_id: turn.assistant_message_id.clone(),
            })
        } else if let Some(e) = failure {
            tracing::warn!(error = %e, model = %turn.spec.id, "generation failed");
            chat::chat_event::Event::Failed(chat::Failed {
                code: e.failure_code() as i32,
                message: e.to_string(),
                retryable: e.retryable(),
                retry_after_seconds: e.retry_after_seconds().unwrap_or(0),
                assistant_message_id: turn.assistant_message_id.clone(),
            })
        } else {
            chat::chat_event::Event::Completed(chat::Completed {
                assistant_message_id: turn.assistant_message_id.clone(),
                finish_reason: if stopped {
                    chat::FinishReason::Stopped
                } else {
                    match finish {
                        Finish::Stop => chat::FinishReason::Stop,
                        Finish::Length => chat::FinishReason::Length,
                        Finish::ContentFilter => chat::FinishReason::ContentFilter,
                    }
                } as i32,
                usage: Some(chat_usage),
            })
        };
        g.publish(event(last));
        detached
    }

    /// Stores the partial answer in the background (bounded by `save_interval`).
    fn save_progress(self: &Arc<Self>, id: &Identity, turn: &Turn, text: &str) {
        let mut client = self.conversation.clone();
        let req = id.request(conv::UpdateMessageRequest {
            conversation_id: turn.conversation_id.clone(),
            message_id: turn.assistant_message_id.clone(),
            content: Some(text.to_owned()),
            ..Default::default()
        });
        tokio::spawn(async move {
            if let Err(e) = client
                .update_message(req)
                .await
                .map(tonic::Response::into_inner)
            {
                tracing::debug!(error = %e, "progress save failed");
            }
        });
    }

    fn renew(self: &Arc<Self>, id: &Identity, lease: &Lease) {
        let mut client = self.ratelimit.clone();
        let req = id.request(rl::RenewLeaseRequest {
            subject: Some(rl::Subject {
                key: lease.subject.clone(),
            }),
            lease_id: lease.lease_id.clone(),
        });
        tokio::spawn(async move {
            if let Err(e) = client
                .renew_lease(req)
                .await
                .map(tonic::Response::into_inner)
            {
                tracing::debug!(error = %e, "lease renewal failed");
            }
        });
    }
}

struct PreparedTurn {
    upstream: AbortOnDrop<Result<ModelStream, ProviderError>>,
    identity: Identity,
    conversation_id: String,
    provider: Arc<dyn ModelProvider>,
    spec: ModelSpec,
    plan: Plan,
    user_message: conv::Message,
    assistant_message_id: String,
    generation_id: String,
    created: bool,
    title_from: Option<String>,
    received: Instant,
}

impl PreparedTurn {
    fn into_turn(self, lease: Lease, detached: Option<DetachedSlot>) -> (Turn, String) {
        (
            Turn {
                identity: self.identity,
                conversation_id: self.conversation_id,
                provider: self.provider,
                spec: self.spec,
                plan: self.plan,
                user_message: self.user_message,
                assistant_message_id: self.assistant_message_id,
                lease,
                created: self.created,
                title_from: self.title_from,
                upstream: self.upstream,
                received: self.received,
                detached,
            },
            self.generation_id,
        )
    }
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

fn event(e: chat::chat_event::Event) -> chat::ChatEvent {
    chat::ChatEvent {
        event: Some(e),
        ..Default::default()
    }
}

fn delta(text: &str) -> chat::ChatEvent {
    event(chat::chat_event::Event::Delta(chat::TokenDelta {
        text: text.to_owned(),
    }))
}

/// A conversation title and what making it cost.
pub struct Title {
    pub text: String,
    /// The title model, when one was called.
    pub model: Option<String>,
    /// Its tokens (reported, else counted), when one was called.
    pub usage: Option<Usage>,
}

/// A conversation title from its first message: the title model when there is one,
/// else (or when it fails) the message's first words.
pub async fn make_title(provider: &dyn ModelProvider, first_message: &str) -> Title {
    let fallback = heuristic_title(first_message);
    let Some(model) = provider.title_model() else {
        return Title {
            text: fallback,
            model: None,
            usage: None,
        };
    };
    const INSTRUCTION: &str = "Write a short title (at most 6 words) for a conversation that starts with the user's message. Reply with the title only, no quotes.";
    let message: String = first_message.chars().take(2000).collect();
    let request = ModelRequest {
        model: model.clone(),
        messages: vec![
            PromptMessage::text(Role::System, INSTRUCTION),
            PromptMessage::text(Role::User, message.clone()),
        ],
        max_output_tokens: 20,
    };
    let mut reported: Option<Usage> = None;
    let mut out = String::new();
    let mut called = false;
    let collect = async {
        let mut s = provider.stream(request).await.ok()?;
        called = true;
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ModelEvent::Delta(t)) => out.push_str(&t),
                Ok(ModelEvent::Usage(u)) => reported = Some(u),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        Some(())
    };
    let ok = matches!(
        tokio::time::timeout(TITLE_TIMEOUT, collect).await,
        Ok(Some(()))
    );
    let usage = called.then(|| {
        reported.filter(|u| u.total_tokens > 0).unwrap_or_else(|| {
            let prompt = provider.count_tokens(&model, INSTRUCTION)
                + provider.count_tokens(&model, &message);
            let completion = provider.count_tokens(&model, &out);
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            }
        })
    });
    let text = if ok { clean_title(&out) } else { String::new() };
    Title {
        text: if text.is_empty() { fallback } else { text },
        model: called.then_some(model),
        usage,
    }
}

fn clean_title(t: &str) -> String {
    let t = t.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let t = t
        .trim()
        .trim_start_matches("Title:")
        .trim()
        .trim_matches(|c: char| c == '"' || c == '\'' || c == '*' || c == '#' || c == '.')
        .trim();
    t.chars().take(80).collect()
}

pub fn heuristic_title(message: &str) -> String {
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().take(8).collect();
    let mut t = words.join(" ");
    if t.chars().count() > 60 {
        t = t.chars().take(60).collect::<String>().trim_end().to_owned();
        t.push('…');
    }
    if t.is_empty() { "New chat".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_from_first_words() {
        assert_eq!(
            heuristic_title("\n  How do I  bake bread at home quickly please now\n"),
            "How do I bake bread at home quickly"
        );
        assert_eq!(heuristic_title(""), "New chat");
        assert_eq!(clean_title("\"Baking Bread.\"\nmore"), "Baking Bread");
    }
}
