//! Running and recently finished generations, behind one trait with two implementations:
//!
//! - [`LocalRegistry`] (embedded mode, one process): events in memory, cancellation by
//!   token, the detached cap counted here.
//! - [`RedisRegistry`] (distributed mode, `REDIS_URL`): the same local registry for the
//!   generations this replica runs, mirrored to Redis so every replica sees them — events
//!   in a Stream per generation (bounded, expiring after the end) for Attach from any
//!   sequence number, a stop list per replica for StopGeneration, the detached cap in a
//!   sorted set per user, and a lease per generation its owner renews. When an owner dies,
//!   any replica claims its expired leases and hands the answers over as interrupted.
//!
//! The contract suite (`tests/registry`) runs against both.

mod local;
mod orphans;
mod redis;
mod scripts;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use confab_proto::chat::v1::{self as chat, ChatEvent};
use futures::Stream;

pub use self::local::{Generation, LocalRegistry, Registry};
pub use self::orphans::{ConversationOrphans, Orphan, OrphanHandler};
pub use self::redis::{RedisOptions, RedisRegistry};
use crate::error::ChatError;

/// Events buffered per generation; older ones are dropped (the stored message has them).
pub const MAX_EVENTS_PER_GENERATION: usize = 8192;
/// Finished generations kept for re-attach.
pub const MAX_FINISHED: usize = 1024;
pub const FINISHED_TTL: Duration = Duration::from_secs(600);

/// What the user sees when the replica running their answer went away mid-answer.
pub const INTERRUPTED: &str = "the answer was interrupted (the server writing it stopped); the partial text is kept — continue or retry";

pub type EventStream = Pin<Box<dyn Stream<Item = ChatEvent> + Send + 'static>>;

/// Who a generation belongs to and where its answer is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationInfo {
    pub id: String,
    pub owner: String,
    pub anonymous: bool,
    pub conversation_id: String,
    pub assistant_message_id: String,
    /// The client going away does not cancel it.
    pub detached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no running or recent generation {0:?}")]
    NotFound(String),
    #[error("events before {first} are no longer buffered; reload the message instead")]
    Gone { first: u64 },
    #[error("running answers are unreachable right now ({0}); try again shortly")]
    Unavailable(String),
    #[error("too many answers are being followed on this server; try again shortly")]
    Busy,
}

impl From<RegistryError> for ChatError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(_) => Self::NotFound(e.to_string()),
            RegistryError::Gone { .. } => Self::FailedPrecondition(e.to_string()),
            RegistryError::Unavailable(_) => Self::Downstream {
                service: "generation registry",
                status: tonic::Status::unavailable(e.to_string()),
            },
            RegistryError::Busy => Self::RateLimited {
                message: e.to_string(),
                retry_after_seconds: 2,
            },
        }
    }
}

/// One of an owner's detached-generation slots; given back when dropped.
pub struct DetachedSlot {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl DetachedSlot {
    pub(crate) fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for DetachedSlot {
    fn drop(&mut self) {
        if let Some(f) = self.release.take() {
            f();
        }
    }
}

/// The generations a chat instance knows: the ones it runs (local handles publishing
/// events) and, in the distributed mode, every other replica's too.
#[async_trait::async_trait]
pub trait GenerationRegistry: Send + Sync + 'static {
    /// The generations this process runs (and recently finished).
    fn local(&self) -> &LocalRegistry;

    /// Takes one of `owner`'s detached slots (across all replicas when shared); `None`
    /// when all are in use.
    async fn detach_slot(&self, owner: &str) -> Option<DetachedSlot>;

    /// Registers a generation this process runs; publish its events on the handle.
    fn begin(&self, info: GenerationInfo) -> Arc<Generation>;

    /// Marks `g` finished (after its last event) and keeps it for re-attach a while.
    fn end(&self, g: &Arc<Generation>);

    /// Events with sequence > `after`, live until the generation's last event.
    async fn attach(
        &self,
        generation_id: &str,
        owner: &str,
        after: u64,
    ) -> Result<EventStream, RegistryError>;

    /// Cancels the generation wherever it runs and waits (briefly) for its last event so
    /// the partial answer is stored. `false` when it had already finished.
    async fn stop(&self, generation_id: &str, owner: &str) -> Result<bool, RegistryError>;

    /// Generations this process is running now.
    fn running(&self) -> usize {
        self.local().running()
    }

    /// A deploy stops this process: running generations get until `within` to finish;
    /// the rest are interrupted (their run stores them as interrupted and sends a
    /// retryable Failed), and this waits a little for that to be stored.
    async fn drain(&self, within: Duration) {
        drain_local(self.local(), within).await;
    }
}

/// [`GenerationRegistry::drain`] for the generations this process runs.
pub async fn drain_local(local: &LocalRegistry, within: Duration) {
    {
        let deadline = tokio::time::Instant::now() + within;
        while local.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = local.interrupt_all();
        if left > 0 {
            tracing::warn!(
                generations = left,
                "drain time over; handing running answers over as interrupted"
            );
            let until = tokio::time::Instant::now() + Duration::from_secs(5);
            while local.running() > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The retryable Failed event of an interrupted answer.
pub fn interrupted_event(assistant_message_id: &str) -> chat::chat_event::Event {
    chat::chat_event::Event::Failed(chat::Failed {
        code: chat::FailureCode::Internal as i32,
        message: INTERRUPTED.to_owned(),
        retryable: true,
        retry_after_seconds: 0,
        assistant_message_id: assistant_message_id.to_owned(),
    })
}

/// The last event of every generation.
pub fn is_terminal(e: &ChatEvent) -> bool {
    matches!(
        e.event,
        Some(chat::chat_event::Event::Completed(_) | chat::chat_event::Event::Failed(_))
    )
}

/// The registry a chat instance uses: shared through Redis when `redis_url` is set.
pub fn from_config(
    max_detached: usize,
    redis_url: Option<&str>,
    options: RedisOptions,
    orphans: Arc<dyn OrphanHandler>,
) -> anyhow::Result<Arc<dyn GenerationRegistry>> {
    Ok(match redis_url {
        None => Arc::new(LocalRegistry::new(max_detached)),
        Some(url) => RedisRegistry::connect(url, max_detached, options, orphans)
            .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?,
    })
}
