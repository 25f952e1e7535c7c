//! The chat domain. A turn is prepared ([`turn`]: quota, conversation, files, history,
//! plan, stored messages), then its generation runs in its own task ([`run`]), publishing
//! sequenced events to the registry, and is settled ([`settle`]: final save, usage, the
//! title from [`titles`], quota released, last event). [`downstream`] holds the typed
//! clients of the services chat calls; [`providers`] the models it can use.

mod downstream;
mod providers;
mod run;
mod settle;
mod titles;
mod turn;

use std::sync::Arc;
use std::time::Duration;

use confab_common::Identity;
use confab_proto::chat::v1 as chat;
use confab_proto::conversation::v1 as conv;
use confab_proto::ratelimit::v1 as rl;
use futures::StreamExt;

use crate::error::ChatError;
use crate::metrics::Metrics;
use crate::registry::{DetachedSlot, Generation, Registry};
use crate::{ChatDeps, Config};
use downstream::{Conversations, Files, Quota};

pub use providers::Providers;
pub use titles::{Title, heuristic_title, make_title};

pub struct Chat {
    config: Config,
    providers: Providers,
    registry: Arc<Registry>,
    metrics: Metrics,
    conversations: Conversations,
    files: Files,
    quota: Quota,
}

impl Chat {
    pub fn new(config: Config, providers: Providers, deps: ChatDeps) -> Self {
        Self {
            providers,
            registry: Arc::new(Registry::new(config.max_detached_per_user)),
            metrics: Metrics::global(),
            conversations: Conversations::new(deps.conversation),
            files: Files::new(deps.files),
            quota: Quota::new(deps.ratelimit),
            config,
        }
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
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

    pub async fn send(
        self: &Arc<Self>,
        id: &Identity,
        req: chat::SendMessageRequest,
    ) -> Result<Arc<Generation>, ChatError> {
        self.answer(id, req.into()).await
    }

    pub async fn regenerate(
        self: &Arc<Self>,
        id: &Identity,
        req: chat::RegenerateRequest,
    ) -> Result<Arc<Generation>, ChatError> {
        self.answer(id, req.into()).await
    }

    pub async fn edit_and_resend(
        self: &Arc<Self>,
        id: &Identity,
        req: chat::EditAndResendRequest,
    ) -> Result<Arc<Generation>, ChatError> {
        self.answer(id, req.into()).await
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
        self.quota.get(id).await
    }

    pub async fn get_message(
        &self,
        id: &Identity,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<conv::Message, ChatError> {
        self.conversations
            .get_message(id, conversation_id, message_id)
            .await
    }
}
