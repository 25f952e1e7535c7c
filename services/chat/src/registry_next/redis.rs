//! The shared registry (distributed mode). This replica's generations live in a
//! [`LocalRegistry`] (the call that started one streams from memory); a mirror task per
//! generation copies its events into a Redis Stream (ids `<seq>-0`, so a re-sent event is
//! skipped and Attach reads "after sequence N" as XREAD from `N-0`) and renews its lease.
//! Other replicas follow that stream, push stop requests onto the owner's stop list, and
//! claim leases that expired (the owner died) to hand the answers over as interrupted.
//!
//! Redis going away does not stop an answer: the owner keeps streaming to its own clients
//! and storing the answer; its mirror retries, and when Redis is back (possibly empty)
//! re-creates the generation and re-sends the events it still buffers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use confab_proto::chat::v1::{self as chat, ChatEvent};
use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, RedisError, Script};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::local::check_buffered;
use super::{
    DetachedSlot, EventStream, FINISHED_TTL, Generation, GenerationInfo, GenerationRegistry,
    LocalRegistry, MAX_EVENTS_PER_GENERATION, Orphan, OrphanHandler, RegistryError, drain_local,
    interrupted_event, is_terminal, scripts,
};

/// How long one Redis call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a follower's XREAD waits for new events before it looks at the state.
const BLOCK: Duration = Duration::from_millis(1000);
/// Events per XADD batch / XREAD reply.
const BATCH: usize = 256;
/// A generation's keys expire at the latest this long after it began (if every replica
/// died and nobody finished or claimed it).
const SAFETY_TTL_SECS: u64 = 86_400;
/// How long a finished generation's mirror keeps trying to reach Redis.
const GIVE_UP_AFTER_FINISH: Duration = Duration::from_secs(60);
/// How long a follower keeps trying to reach Redis before it ends its stream.
const FOLLOWER_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Key prefix (tests isolate themselves with one each).
    pub prefix: String,
    /// A generation whose owner has not renewed for this long is interrupted; renewed
    /// every third of it, expired leases looked for every quarter.
    pub lease: Duration,
    pub finished_ttl: Duration,
    pub max_events: usize,
    /// Attach streams read from Redis at once (each holds a connection).
    pub max_followers: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "chat:".to_owned(),
            lease: Duration::from_secs(9),
            finished_ttl: FINISHED_TTL,
            max_events: MAX_EVENTS_PER_GENERATION,
            max_followers: 512,
        }
    }
}

struct Scripts {
    begin: Script,
    append: Script,
    renew: Script,
    finish: Script,
    claim: Script,
    detach: Script,
    renew_slot: Script,
}

struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    replica: String,
    opts: RedisOptions,
    max_detached: usize,
    orphans: Arc<dyn OrphanHandler>,
    scripts: Scripts,
    /// Cancelled when this registry goes away (or a test plays dead).
    dead: CancellationToken,
}

pub struct RedisRegistry {
    local: LocalRegistry,
    shared: Arc<Shared>,
    followers: Arc<Semaphore>,
    mirrors: TaskTracker,
}

impl Drop for RedisRegistry {
    fn drop(&mut self) {
        self.shared.dead.cancel();
    }
}

fn timeout_error() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis call timed out",
    ))
}

async fn bounded<T>(f: impl Future<Output = Result<T, RedisError>>) -> Result<T, RedisError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(timeout_error()))
}

impl Shared {
    fn meta(&self, id: &str) -> String {
        format!("{}{{{id}}}:meta", self.opts.prefix)
    }
    fn events(&self, id: &str) -> String {
        format!("{}{{{id}}}:events", self.opts.prefix)
    }
    fn running(&self) -> String {
        format!("{}running", self.opts.prefix)
    }
    fn stop_list(&self, replica: &str) -> String {
        format!("{}stop:{replica}", self.opts.prefix)
    }
    fn detached(&self, owner: &str) -> String {
        format!("{}detached:{owner}", self.opts.prefix)
    }
    fn lease_ms(&self) -> u64 {
        self.opts.lease.as_millis().max(1) as u64
    }
    fn ttl_secs(&self) -> u64 {
        self.opts.finished_ttl.as_secs().max(1)
    }

    /// A connection of its own, for blocking reads (they would stall the shared one).
    async fn blocking_connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(BLOCK + CALL_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    async fn begin(&self, info: &GenerationInfo) -> Result<i64, RedisError> {
        let mut inv = self.scripts.begin.prepare_invoke();
        inv.key(self.meta(&info.id))
            .key(self.events(&info.id))
            .key(self.running())
            .arg(&info.id)
            .arg(&self.replica)
            .arg(&info.owner)
            .arg(u8::from(info.anonymous))
            .arg(&info.conversation_id)
            .arg(&info.assistant_message_id)
            .arg(u8::from(info.detached))
            .arg(self.lease_ms())
            .arg(SAFETY_TTL_SECS);
        bounded(inv.invoke_async(&mut self.conn.clone())).await
    }

    async fn append(&self, id: &str, events: &[ChatEvent]) -> Result<i64, RedisError> {
        let mut inv = self.scripts.append.prepare_invoke();
        inv.key(self.meta(id))
            .key(self.events(id))
            .arg(&self.replica)
            .arg(self.opts.max_events)
            .arg(SAFETY_TTL_SECS);
        for e in events {
            inv.arg(e.sequence).arg(e.encode_to_vec());
        }
        bounded(inv.invoke_async(&mut self.conn.clone())).await
    }

    async fn renew(&self, id: &str) -> Result<i64, RedisError> {
        let mut inv = self.scripts.renew.prepare_invoke();
        inv.key(self.meta(id))
            .key(self.running())
            .arg(id)
            .arg(&self.replica)
            .arg(self.lease_ms());
        bounded(inv.invoke_async(&mut self.conn.clone())).await
    }

    async fn finish(&self, id: &str) -> Result<i64, RedisError> {
        let mut inv = self.scripts.finish.prepare_invoke();
        inv.key(self.meta(id))
            .key(self.events(id))
            .key(self.running())
            .arg(id)
            .arg(&self.replica)
            .arg(self.ttl_secs());
        bounded(inv.invoke_async(&mut self.conn.clone())).await
    }

    async fn meta_of(&self, id: &str) -> Result<HashMap<String, String>, RedisError> {
        bounded(
            redis::cmd("HGETALL")
                .arg(self.meta(id))
                .query_async(&mut self.conn.clone()),
        )
        .await
    }

    /// Sequence of the oldest event still in the stream (`None` when it is empty).
    async fn first_in_stream(&self, id: &str) -> Result<Option<u64>, RedisError> {
        let r: StreamRangeReply = bounded(
            redis::cmd("XRANGE")
                .arg(self.events(id))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.conn.clone()),
        )
        .await?;
        Ok(r.ids.first().and_then(|e| seq_of(&e.id)))
    }
}

/// The sequence number in a stream id `<seq>-0`.
fn seq_of(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(s, _)| s.parse().ok())
}

fn decode(entry: &redis::streams::StreamId) -> Option<ChatEvent> {
    let bytes: Vec<u8> = entry.get("e")?;
    ChatEvent::decode(bytes.as_slice()).ok()
}

fn info_from_meta(id: &str, m: &HashMap<String, String>) -> GenerationInfo {
    let field = |k: &str| m.get(k).cloned().unwrap_or_default();
    GenerationInfo {
        id: id.to_owned(),
        owner: field("owner"),
        anonymous: field("anon") == "1",
        conversation_id: field("conv"),
        assistant_message_id: field("msg"),
        detached: field("detached") == "1",
    }
}

impl RedisRegistry {
    /// Connects lazily (the registry works, degraded, while Redis is down) and starts
    /// this replica's stop listener and orphan sweeper.
    pub fn connect(
        url: &str,
        max_detached: usize,
        opts: RedisOptions,
        orphans: Arc<dyn OrphanHandler>,
    ) -> Result<Arc<Self>, RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let shared = Arc::new(Shared {
            client,
            conn,
            replica: uuid::Uuid::now_v7().to_string(),
            max_detached,
            orphans,
            scripts: Scripts {
                begin: Script::new(&scripts::begin()),
                append: Script::new(scripts::APPEND),
                renew: Script::new(&scripts::renew()),
                finish: Script::new(scripts::FINISH),
                claim: Script::new(&scripts::claim()),
                detach: Script::new(&scripts::detach()),
                renew_slot: Script::new(&scripts::renew_slot()),
            },
            opts: opts.clone(),
            dead: CancellationToken::new(),
        });
        let this = Arc::new(Self {
            local: LocalRegistry::with_limits(max_detached, opts.finished_ttl, opts.max_events),
            followers: Arc::new(Semaphore::new(opts.max_followers.max(1))),
            mirrors: TaskTracker::new(),
            shared: shared.clone(),
        });
        tokio::spawn(listen_for_stops(shared.clone(), Arc::downgrade(&this)));
        tokio::spawn(sweep(shared));
        Ok(this)
    }

    /// This replica's id (the owner named in its generations).
    pub fn replica(&self) -> &str {
        &self.shared.replica
    }

    /// Tests: behave like a SIGKILLed process — stop every background task (mirrors,
    /// leases, stop listener, sweeper) without finishing anything.
    pub fn play_dead(&self) {
        self.shared.dead.cancel();
    }

    async fn follow(
        &self,
        generation_id: &str,
        after: u64,
        meta: &HashMap<String, String>,
    ) -> Result<EventStream, RegistryError> {
        let permit = self
            .followers
            .clone()
            .try_acquire_owned()
            .map_err(|_| RegistryError::Busy)?;
        let unavailable = |e: RedisError| RegistryError::Unavailable(e.to_string());
        let last: u64 = meta.get("last").and_then(|l| l.parse().ok()).unwrap_or(0);
        let first = self
            .shared
            .first_in_stream(generation_id)
            .await
            .map_err(unavailable)?
            .unwrap_or(last + 1);
        check_buffered(after, first)?;
        let conn = self
            .shared
            .blocking_connection()
            .await
            .map_err(unavailable)?;
        Ok(follower(
            self.shared.clone(),
            generation_id.to_owned(),
            after,
            conn,
            permit,
            meta.get("state").filter(|s| *s != "running").cloned(),
        ))
    }
}

/// Events of a generation another replica runs, from Redis: XREAD after the last one
/// seen, blocking a while for new ones; ends after the last event, when the generation
/// is gone, or when Redis stays unreachable.
fn follower(
    shared: Arc<Shared>,
    id: String,
    after: u64,
    conn: MultiplexedConnection,
    permit: OwnedSemaphorePermit,
    ended: Option<String>,
) -> EventStream {
    struct Follow {
        shared: Arc<Shared>,
        key: String,
        id: String,
        cursor: u64,
        conn: Option<MultiplexedConnection>,
        queue: std::collections::VecDeque<ChatEvent>,
        done: bool,
        /// The generation's state once it stopped running.
        ended: Option<String>,
        /// Empty reads since then.
        idle_after_end: u32,
        failing_since: Option<Instant>,
        _permit: OwnedSemaphorePermit,
    }
    let state = Follow {
        key: shared.events(&id),
        shared,
        id,
        cursor: after,
        conn: Some(conn),
        queue: Default::default(),
        done: false,
        ended,
        idle_after_end: 0,
        failing_since: None,
        _permit: permit,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.queue.pop_front() {
                st.cursor = ev.sequence;
                if is_terminal(&ev) {
                    st.done = true;
                    st.queue.clear();
                }
                return Some((ev, st));
            }
            if st.done {
                return None;
            }
            let conn = match st.conn.as_mut() {
                Some(c) => c,
                None => match st.shared.blocking_connection().await {
                    Ok(c) => st.conn.insert(c),
                    Err(e) => {
                        let since = *st.failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > FOLLOWER_PATIENCE {
                            tracing::warn!(error = %e, generation = %st.id, "redis unreachable; ending attach");
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                },
            };
            // Once the generation stopped running, read what is left without blocking.
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(BATCH);
            if st.ended.is_none() {
                cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
            }
            cmd.arg("STREAMS")
                .arg(&st.key)
                .arg(format!("{}-0", st.cursor));
            let read: Result<Option<StreamReadReply>, RedisError> = cmd.query_async(conn).await;
            match read {
                Ok(Some(reply)) if !reply.keys.iter().all(|k| k.ids.is_empty()) => {
                    st.failing_since = None;
                    for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                        if let Some(ev) = decode(&entry) {
                            st.queue.push_back(ev);
                        }
                    }
                }
                Ok(_) => {
                    st.failing_since = None;
                    match st.ended.as_deref() {
                        // Finished: its last event was stored before that.
                        Some("finished") => return None,
                        // Interrupted: its Failed event follows the claim; wait a little.
                        Some(_) => {
                            st.idle_after_end += 1;
                            if st.idle_after_end >= 10 {
                                return None;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        None => match st.shared.meta_of(&st.id).await {
                            Ok(m) if m.is_empty() => return None,
                            Ok(m) => {
                                let state = m.get("state").cloned().unwrap_or_default();
                                if state != "running" {
                                    st.ended = Some(state);
                                }
                            }
                            Err(_) => {}
                        },
                    }
                }
                Err(e) => {
                    st.conn = None;
                    let since = *st.failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > FOLLOWER_PATIENCE {
                        tracing::warn!(error = %e, generation = %st.id, "redis unreachable; ending attach");
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }))
}

/// Copies a generation's events to Redis and renews its lease until it finished and
/// everything is stored (or another replica took it over, or this registry died).
async fn mirror(shared: Arc<Shared>, g: Arc<Generation>) {
    let mut changes = g.changes();
    let renew_every = (shared.opts.lease / 3).max(Duration::from_millis(100));
    let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);
    // The last sequence Redis holds; `None` when it must be (re)created first.
    let mut synced: Option<u64> = None;
    let mut backoff = Duration::from_millis(50);
    let mut finished_at: Option<Instant> = None;
    let mut warned = false;
    loop {
        if shared.dead.is_cancelled() {
            return;
        }
        changes.mark_unchanged();
        let step = sync_once(&shared, &g, &mut synced).await;
        match step {
            Ok(Step::Done) => return,
            Ok(Step::Lost) => {
                tracing::warn!(generation = %g.id, "another replica took this generation over; no longer mirroring it");
                return;
            }
            Ok(Step::Idle) => {
                backoff = Duration::from_millis(50);
                if warned {
                    tracing::info!(generation = %g.id, "redis reachable again; generation re-synced");
                    warned = false;
                }
                tokio::select! {
                    _ = shared.dead.cancelled() => return,
                    _ = changes.changed() => {}
                    _ = renew.tick() => match shared.renew(&g.id).await {
                        Ok(-1) => synced = None,
                        Ok(-2) => {
                            tracing::warn!(generation = %g.id, "lease lost to another replica");
                            return;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, generation = %g.id, "could not renew the lease");
                            synced = None;
                        }
                    },
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, generation = %g.id, "redis unreachable; the answer goes on, Attach elsewhere waits");
                    warned = true;
                }
                synced = None;
                if g.is_finished() {
                    let at = *finished_at.get_or_insert_with(Instant::now);
                    if at.elapsed() > GIVE_UP_AFTER_FINISH {
                        tracing::warn!(generation = %g.id, "gave up mirroring a finished generation");
                        return;
                    }
                }
                tokio::select! {
                    _ = shared.dead.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

enum Step {
    /// Everything published so far is stored; wait for more.
    Idle,
    /// Finished and stored.
    Done,
    /// Another replica claimed it.
    Lost,
}

async fn sync_once(
    shared: &Shared,
    g: &Generation,
    synced: &mut Option<u64>,
) -> Result<Step, RedisError> {
    loop {
        let last = match *synced {
            Some(s) => s,
            None => match shared.begin(g.info()).await? {
                -2 => return Ok(Step::Lost),
                n => {
                    let n = n.max(0) as u64;
                    *synced = Some(n);
                    n
                }
            },
        };
        let (events, finished) = g.events_after(last, BATCH);
        if !events.is_empty() {
            match shared.append(&g.id, &events).await? {
                -1 => *synced = None,
                -2 => return Ok(Step::Lost),
                n => *synced = Some(n.max(0) as u64),
            }
            continue;
        }
        if !finished {
            return Ok(Step::Idle);
        }
        return match shared.finish(&g.id).await? {
            -1 => {
                *synced = None;
                continue;
            }
            -2 => Ok(Step::Lost),
            _ => Ok(Step::Done),
        };
    }
}

/// Cancels this replica's generations that someone asked (on any replica) to stop.
async fn listen_for_stops(shared: Arc<Shared>, registry: std::sync::Weak<RedisRegistry>) {
    let key = shared.stop_list(&shared.replica);
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        if shared.dead.is_cancelled() {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match shared.blocking_connection().await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    tokio::select! {
                        _ = shared.dead.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    }
                }
            },
        };
        let popped: Result<Option<(String, String)>, RedisError> = tokio::select! {
            _ = shared.dead.cancelled() => return,
            r = redis::cmd("BLPOP").arg(&key).arg(BLOCK.as_secs_f64()).query_async(c) => r,
        };
        match popped {
            Ok(Some((_, id))) => {
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                if let Some(g) = registry.local.get_any(&id) {
                    tracing::info!(generation = %id, "stop requested through another replica");
                    g.cancel.cancel();
                }
            }
            Ok(None) => {}
            Err(_) => {
                conn = None;
                tokio::select! {
                    _ = shared.dead.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
    }
}

/// Looks for expired leases (dead owners) and hands their answers over as interrupted.
async fn sweep(shared: Arc<Shared>) {
    let every = (shared.opts.lease / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shared.dead.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match claim_orphans(&shared).await {
            Ok(n) if n > 0 => tracing::info!(
                generations = n,
                "interrupted answers of a replica that went away"
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not look for orphaned generations"),
        }
    }
}

async fn claim_orphans(shared: &Shared) -> Result<usize, RedisError> {
    let mut inv = shared.scripts.claim.prepare_invoke();
    inv.key(shared.running()).arg(&shared.opts.prefix).arg(32);
    let claimed: Vec<Vec<String>> = bounded(inv.invoke_async(&mut shared.conn.clone())).await?;
    for row in &claimed {
        let [id, seq, owner, anon, conv, msg, detached] = row.as_slice() else {
            continue;
        };
        let info = GenerationInfo {
            id: id.clone(),
            owner: owner.clone(),
            anonymous: anon == "1",
            conversation_id: conv.clone(),
            assistant_message_id: msg.clone(),
            detached: detached == "1",
        };
        let seq: u64 = seq.parse().unwrap_or(0);
        if let Err(e) = hand_over(shared, &info, seq).await {
            tracing::warn!(error = %e, generation = %id, "could not hand an orphaned answer over");
        }
    }
    Ok(claimed.len())
}

async fn hand_over(shared: &Shared, info: &GenerationInfo, seq: u64) -> Result<(), RedisError> {
    let failed = ChatEvent {
        sequence: seq,
        generation_id: info.id.clone(),
        conversation_id: info.conversation_id.clone(),
        event: Some(interrupted_event(&info.assistant_message_id)),
    };
    let events = shared.events(&info.id);
    let mut conn = shared.conn.clone();
    let _: String = bounded(
        redis::cmd("XADD")
            .arg(&events)
            .arg(format!("{seq}-0"))
            .arg("e")
            .arg(failed.encode_to_vec())
            .query_async(&mut conn),
    )
    .await?;
    // The partial text, when the stream still holds the answer from its first event.
    let all: StreamRangeReply = bounded(
        redis::cmd("XRANGE")
            .arg(&events)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(shared.opts.max_events * 2)
            .query_async(&mut conn),
    )
    .await?;
    let decoded: Vec<ChatEvent> = all.ids.iter().filter_map(decode).collect();
    let text = (decoded.first().map(|e| e.sequence) == Some(1)).then(|| {
        decoded
            .iter()
            .filter_map(|e| match &e.event {
                Some(chat::chat_event::Event::Delta(d)) => Some(d.text.as_str()),
                _ => None,
            })
            .collect::<String>()
    });
    let orphan = Orphan {
        info: info.clone(),
        text,
    };
    if let Err(e) = shared.orphans.interrupted(&orphan).await {
        tracing::warn!(error = %e, generation = %info.id, "could not store an interrupted answer");
    }
    let ttl = shared.ttl_secs();
    let _: () = bounded(
        redis::pipe()
            .expire(shared.meta(&info.id), ttl as i64)
            .ignore()
            .expire(&events, ttl as i64)
            .ignore()
            .query_async(&mut conn),
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl GenerationRegistry for RedisRegistry {
    fn local(&self) -> &LocalRegistry {
        &self.local
    }

    async fn detach_slot(&self, owner: &str) -> Option<DetachedSlot> {
        let local = self.local.try_detach(owner)?;
        let shared = &self.shared;
        let slot = uuid::Uuid::now_v7().to_string();
        let key = shared.detached(owner);
        let mut inv = shared.scripts.detach.prepare_invoke();
        inv.key(&key)
            .arg(&slot)
            .arg(shared.max_detached)
            .arg(shared.lease_ms());
        match bounded(inv.invoke_async::<i64>(&mut shared.conn.clone())).await {
            Ok(1) => {}
            Ok(_) => return None,
            Err(e) => {
                // Degraded: the cap holds per replica until Redis is back.
                tracing::warn!(error = %e, "redis unreachable; detached answers counted on this replica only");
                return Some(local);
            }
        }
        let stop = CancellationToken::new();
        let renewing = {
            let shared = shared.clone();
            let (key, slot, stop) = (key.clone(), slot.clone(), stop.clone());
            async move {
                let every = (shared.opts.lease / 3).max(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = shared.dead.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    let mut inv = shared.scripts.renew_slot.prepare_invoke();
                    inv.key(&key).arg(&slot).arg(shared.lease_ms());
                    let _ = bounded(inv.invoke_async::<i64>(&mut shared.conn.clone())).await;
                }
            }
        };
        tokio::spawn(renewing);
        let shared = shared.clone();
        Some(DetachedSlot::new(move || {
            stop.cancel();
            drop(local);
            tokio::spawn(async move {
                let r: Result<i64, _> = bounded(
                    redis::cmd("ZREM")
                        .arg(&key)
                        .arg(&slot)
                        .query_async(&mut shared.conn.clone()),
                )
                .await;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "detached slot left to expire");
                }
            });
        }))
    }

    fn begin(&self, info: GenerationInfo) -> Arc<Generation> {
        let g = self.local.start_info(info);
        self.mirrors.spawn(mirror(self.shared.clone(), g.clone()));
        g
    }

    fn end(&self, g: &Arc<Generation>) {
        GenerationRegistry::end(&self.local, g);
    }

    async fn attach(
        &self,
        generation_id: &str,
        owner: &str,
        after: u64,
    ) -> Result<EventStream, RegistryError> {
        if self.local.get(generation_id, owner).is_some() {
            return self.local.attach_local(generation_id, owner, after);
        }
        let meta = self
            .shared
            .meta_of(generation_id)
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        if meta.is_empty() || info_from_meta(generation_id, &meta).owner != owner {
            return Err(RegistryError::NotFound(generation_id.to_owned()));
        }
        self.follow(generation_id, after, &meta).await
    }

    async fn stop(&self, generation_id: &str, owner: &str) -> Result<bool, RegistryError> {
        if let Some(g) = self.local.get(generation_id, owner) {
            return Ok(self.local.stop_local(&g).await);
        }
        let shared = &self.shared;
        let unavailable = |e: RedisError| RegistryError::Unavailable(e.to_string());
        let meta = shared.meta_of(generation_id).await.map_err(unavailable)?;
        if meta.is_empty() || info_from_meta(generation_id, &meta).owner != owner {
            return Err(RegistryError::NotFound(generation_id.to_owned()));
        }
        if meta.get("state").map(String::as_str) != Some("running") {
            return Ok(false);
        }
        let replica = meta.get("replica").cloned().unwrap_or_default();
        let list = shared.stop_list(&replica);
        let _: () = bounded(
            redis::pipe()
                .rpush(&list, generation_id)
                .ignore()
                .pexpire(&list, 60_000)
                .ignore()
                .query_async(&mut shared.conn.clone()),
        )
        .await
        .map_err(unavailable)?;
        // Wait (briefly) for its last event: then the partial answer is stored.
        let last: u64 = meta.get("last").and_then(|l| l.parse().ok()).unwrap_or(0);
        if let Ok(mut events) = self.follow(generation_id, last, &meta).await {
            use futures::StreamExt;
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(ev) = events.next().await {
                    if is_terminal(&ev) {
                        break;
                    }
                }
            })
            .await;
        }
        Ok(true)
    }

    async fn drain(&self, within: Duration) {
        drain_local(&self.local, within).await;
        // The mirrors store the last events (the interrupted ones too) and finish.
        self.mirrors.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.mirrors.wait()).await;
    }
}
