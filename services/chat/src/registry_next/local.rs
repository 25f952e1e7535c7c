//! The in-process registry: each generation's events (bounded) for Attach, and a
//! cancellation token for StopGeneration and for the client going away.
//!
//! A *detached* generation (`detach_on_disconnect`) is not cancelled when its client
//! goes away; each owner may run at most `max_detached` of them at once (a slot is taken
//! before any work and given back when the generation ends). Finished generations stay
//! for re-attach for a TTL ([`FINISHED_TTL`] by default, at most [`MAX_FINISHED`]) and
//! are then dropped, also when nobody ever re-attaches.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use confab_proto::chat::v1::ChatEvent;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    DetachedSlot, EventStream, FINISHED_TTL, GenerationInfo, GenerationRegistry,
    MAX_EVENTS_PER_GENERATION, MAX_FINISHED, RegistryError,
};

pub struct Generation {
    pub id: String,
    pub owner: String,
    pub conversation_id: String,
    pub cancel: CancellationToken,
    /// The client going away does not cancel it.
    pub detached: bool,
    info: GenerationInfo,
    /// Set when this process stops before the answer ends (a deploy): the run stores
    /// the answer as interrupted instead of stopped.
    interrupted: AtomicBool,
    max_events: usize,
    inner: Mutex<Inner>,
    /// Latest sequence number published.
    seq_tx: watch::Sender<u64>,
}

struct Inner {
    events: VecDeque<ChatEvent>,
    next_seq: u64,
    finished: bool,
}

impl Generation {
    fn new(info: GenerationInfo, max_events: usize) -> Self {
        Self {
            id: info.id.clone(),
            owner: info.owner.clone(),
            conversation_id: info.conversation_id.clone(),
            detached: info.detached,
            cancel: CancellationToken::new(),
            info,
            interrupted: AtomicBool::new(false),
            max_events: max_events.max(1),
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next_seq: 0,
                finished: false,
            }),
            seq_tx: watch::channel(0).0,
        }
    }

    pub fn info(&self) -> &GenerationInfo {
        &self.info
    }

    /// Publishes an event, assigning its sequence number.
    pub fn publish(&self, mut event: ChatEvent) -> u64 {
        let seq = {
            let mut inner = self.inner.lock();
            inner.next_seq += 1;
            event.sequence = inner.next_seq;
            event.generation_id.clone_from(&self.id);
            event.conversation_id.clone_from(&self.conversation_id);
            if inner.events.len() == self.max_events {
                inner.events.pop_front();
            }
            inner.events.push_back(event);
            inner.next_seq
        };
        self.seq_tx.send_replace(seq);
        seq
    }

    /// Marks the end: subscribers drain and finish.
    pub fn finish(&self) {
        self.inner.lock().finished = true;
        self.seq_tx.send_modify(|_| {});
    }

    pub fn is_finished(&self) -> bool {
        self.inner.lock().finished
    }

    /// Cancels it because this process is going away; see [`Generation::is_interrupted`].
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Release);
        self.cancel.cancel();
    }

    /// The run was cancelled by [`Generation::interrupt`], not by a user's stop.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }

    /// Oldest sequence number still buffered (1 when nothing was dropped).
    pub fn first_buffered(&self) -> u64 {
        let inner = self.inner.lock();
        inner
            .events
            .front()
            .map_or(inner.next_seq + 1, |e| e.sequence)
    }

    /// Latest sequence number published (0 before the first event).
    pub fn last_sequence(&self) -> u64 {
        self.inner.lock().next_seq
    }

    /// Buffered events with sequence > `after` (at most `limit`), and whether it finished.
    pub(crate) fn events_after(&self, after: u64, limit: usize) -> (Vec<ChatEvent>, bool) {
        let inner = self.inner.lock();
        // Sequences are contiguous: skip straight to the first one after `after`.
        let first = inner.events.front().map_or(1, |e| e.sequence);
        let skip = (after.saturating_add(1).saturating_sub(first)) as usize;
        let out: Vec<_> = inner
            .events
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect();
        let finished = inner.finished && skip + out.len() >= inner.events.len();
        (out, finished)
    }

    /// Wakes on every publish and on finish.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.seq_tx.subscribe()
    }

    /// The stream of the call that started the generation: from the start, and (unless
    /// detached) cancelling the generation when dropped before the end.
    pub fn primary(self: &Arc<Self>) -> impl Stream<Item = ChatEvent> + Send + 'static {
        self.subscribe(0, !self.detached)
    }

    /// Events with sequence > `after`, live until the generation finishes. When
    /// `cancel_on_drop`, dropping the stream before the end cancels the generation.
    pub fn subscribe(
        self: &Arc<Self>,
        after: u64,
        cancel_on_drop: bool,
    ) -> impl Stream<Item = ChatEvent> + Send + 'static {
        struct Sub {
            generation: Arc<Generation>,
            rx: watch::Receiver<u64>,
            last: u64,
            queue: VecDeque<ChatEvent>,
            guard: Option<tokio_util::sync::DropGuard>,
            done: bool,
        }
        let sub = Sub {
            rx: self.seq_tx.subscribe(),
            generation: self.clone(),
            last: after,
            queue: VecDeque::new(),
            guard: cancel_on_drop.then(|| self.cancel.clone().drop_guard()),
            done: false,
        };
        futures::stream::unfold(sub, |mut sub| async move {
            loop {
                if let Some(ev) = sub.queue.pop_front() {
                    sub.last = ev.sequence;
                    return Some((ev, sub));
                }
                if sub.done {
                    if let Some(g) = sub.guard.take() {
                        g.disarm();
                    }
                    return None;
                }
                sub.rx.mark_unchanged();
                let (events, finished) = sub.generation.events_after(sub.last, usize::MAX);
                if events.is_empty() {
                    if finished {
                        sub.done = true;
                        continue;
                    }
                    if sub.rx.changed().await.is_err() {
                        sub.done = true;
                    }
                    continue;
                }
                sub.queue.extend(events);
            }
        })
    }
}

/// The in-process registry (also the owner-side half of [`super::RedisRegistry`]).
pub struct LocalRegistry {
    inner: Arc<Mutex<RegistryInner>>,
    max_detached: usize,
    ttl: Duration,
    max_events: usize,
}

/// The name the service has always used.
pub type Registry = LocalRegistry;

impl Default for LocalRegistry {
    fn default() -> Self {
        Self::new(3)
    }
}

#[derive(Default)]
struct RegistryInner {
    by_id: HashMap<String, Arc<Generation>>,
    finished: VecDeque<(Instant, String)>,
    /// Detached generations running (or being prepared) per owner.
    detached: HashMap<String, usize>,
}

impl LocalRegistry {
    /// At most `max_detached` detached generations per owner at once.
    pub fn new(max_detached: usize) -> Self {
        Self::with_limits(max_detached, FINISHED_TTL, MAX_EVENTS_PER_GENERATION)
    }

    /// Keeping finished generations for `ttl` instead of [`FINISHED_TTL`].
    pub fn with_ttl(max_detached: usize, ttl: Duration) -> Self {
        Self::with_limits(max_detached, ttl, MAX_EVENTS_PER_GENERATION)
    }

    /// With `max_events` buffered per generation (tests use few).
    pub fn with_limits(max_detached: usize, ttl: Duration, max_events: usize) -> Self {
        Self {
            inner: Arc::default(),
            max_detached,
            ttl,
            max_events,
        }
    }

    /// How long a finished generation stays for re-attach.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn max_detached(&self) -> usize {
        self.max_detached
    }

    pub fn max_events(&self) -> usize {
        self.max_events
    }

    /// Takes one of `owner`'s detached slots; `None` when all are in use.
    pub fn try_detach(&self, owner: &str) -> Option<DetachedSlot> {
        let mut inner = self.inner.lock();
        let n = inner.detached.entry(owner.to_owned()).or_default();
        if *n >= self.max_detached {
            if *n == 0 {
                inner.detached.remove(owner);
            }
            return None;
        }
        *n += 1;
        let registry = Arc::downgrade(&self.inner);
        let owner = owner.to_owned();
        Some(DetachedSlot::new(move || {
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let mut inner = registry.lock();
            if let Some(n) = inner.detached.get_mut(&owner) {
                *n -= 1;
                if *n == 0 {
                    inner.detached.remove(&owner);
                }
            }
        }))
    }

    /// Detached generations `owner` runs now.
    pub fn detached(&self, owner: &str) -> usize {
        self.inner.lock().detached.get(owner).copied().unwrap_or(0)
    }

    pub fn start(
        &self,
        id: String,
        owner: String,
        conversation_id: String,
        detached: bool,
    ) -> Arc<Generation> {
        self.start_info(GenerationInfo {
            id,
            owner,
            conversation_id,
            detached,
            ..GenerationInfo::default()
        })
    }

    pub fn start_info(&self, info: GenerationInfo) -> Arc<Generation> {
        let g = Arc::new(Generation::new(info, self.max_events));
        let mut inner = self.inner.lock();
        self.prune(&mut inner);
        inner.by_id.insert(g.id.clone(), g.clone());
        g
    }

    /// Finishes `g` and keeps it for re-attach within the bounds. Call [`Registry::expire`]
    /// after [`Registry::ttl`] so it goes even if no other generation ever finishes.
    pub fn finish(&self, g: &Generation) {
        g.finish();
        let mut inner = self.inner.lock();
        inner.finished.push_back((Instant::now(), g.id.clone()));
        self.prune(&mut inner);
    }

    /// Drops finished generations past their time.
    pub fn expire(&self) {
        let mut inner = self.inner.lock();
        self.prune(&mut inner);
    }

    fn prune(&self, inner: &mut RegistryInner) {
        prune(inner, self.ttl);
    }

    /// Generations held (running and finished).
    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The generation if it exists and belongs to `owner`.
    pub fn get(&self, id: &str, owner: &str) -> Option<Arc<Generation>> {
        self.get_any(id).filter(|g| g.owner == owner)
    }

    /// The generation whoever owns it (for stop requests relayed by other replicas).
    pub fn get_any(&self, id: &str) -> Option<Arc<Generation>> {
        self.inner.lock().by_id.get(id).cloned()
    }

    pub fn running(&self) -> usize {
        self.inner
            .lock()
            .by_id
            .values()
            .filter(|g| !g.is_finished())
            .count()
    }

    pub fn running_generations(&self) -> Vec<Arc<Generation>> {
        self.inner
            .lock()
            .by_id
            .values()
            .filter(|g| !g.is_finished())
            .cloned()
            .collect()
    }

    /// Interrupts every running generation; returns how many there were.
    pub fn interrupt_all(&self) -> usize {
        let running = self.running_generations();
        for g in &running {
            g.interrupt();
        }
        running.len()
    }

    /// Attach to a generation held here.
    pub fn attach_local(
        &self,
        generation_id: &str,
        owner: &str,
        after: u64,
    ) -> Result<EventStream, RegistryError> {
        let g = self
            .get(generation_id, owner)
            .ok_or_else(|| RegistryError::NotFound(generation_id.to_owned()))?;
        check_buffered(after, g.first_buffered())?;
        Ok(Box::pin(g.subscribe(after, false)))
    }

    /// Stop a generation held here: cancel, then wait (briefly) for its last event.
    pub async fn stop_local(&self, g: &Arc<Generation>) -> bool {
        if g.is_finished() {
            return false;
        }
        g.cancel.cancel();
        // Wait (briefly) until the partial answer is stored, so a reload shows it.
        let mut rx = g.changes();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|_| g.is_finished())).await;
        true
    }
}

fn prune(inner: &mut RegistryInner, ttl: Duration) {
    let now = Instant::now();
    while inner.finished.len() > MAX_FINISHED
        || inner
            .finished
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= ttl)
    {
        if let Some((_, id)) = inner.finished.pop_front() {
            inner.by_id.remove(&id);
        }
    }
}

/// Replay from `after` needs every event after it still buffered.
pub(crate) fn check_buffered(after: u64, first: u64) -> Result<(), RegistryError> {
    if after.saturating_add(1) < first {
        return Err(RegistryError::Gone { first });
    }
    Ok(())
}

#[async_trait::async_trait]
impl GenerationRegistry for LocalRegistry {
    fn local(&self) -> &LocalRegistry {
        self
    }

    async fn detach_slot(&self, owner: &str) -> Option<DetachedSlot> {
        self.try_detach(owner)
    }

    fn begin(&self, info: GenerationInfo) -> Arc<Generation> {
        self.start_info(info)
    }

    fn end(&self, g: &Arc<Generation>) {
        self.finish(g);
        // Nobody may ever re-attach: drop it when its time is up.
        let inner = Arc::downgrade(&self.inner);
        let ttl = self.ttl;
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            if let Some(inner) = inner.upgrade() {
                prune(&mut inner.lock(), ttl);
            }
        });
    }

    async fn attach(
        &self,
        generation_id: &str,
        owner: &str,
        after: u64,
    ) -> Result<EventStream, RegistryError> {
        self.attach_local(generation_id, owner, after)
    }

    async fn stop(&self, generation_id: &str, owner: &str) -> Result<bool, RegistryError> {
        let g = self
            .get(generation_id, owner)
            .ok_or_else(|| RegistryError::NotFound(generation_id.to_owned()))?;
        Ok(self.stop_local(&g).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn replays_then_follows_live_and_ends() {
        let r = Registry::default();
        let g = r.start("g1".into(), "alice".into(), "c1".into(), false);
        for _ in 0..3 {
            g.publish(ChatEvent::default());
        }
        let mut s = Box::pin(g.subscribe(1, false));
        assert_eq!(s.next().await.unwrap().sequence, 2);
        assert_eq!(s.next().await.unwrap().sequence, 3);
        let g2 = g.clone();
        tokio::spawn(async move {
            g2.publish(ChatEvent::default());
            r.finish(&g2);
        });
        let ev = s.next().await.unwrap();
        assert_eq!((ev.sequence, ev.generation_id.as_str()), (4, "g1"));
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn dropping_the_primary_stream_cancels() {
        let r = Registry::default();
        let g = r.start("g1".into(), "alice".into(), "c1".into(), false);
        let s = g.primary();
        drop(s);
        assert!(g.cancel.is_cancelled());
        assert!(r.get("g1", "bob").is_none());
        assert!(r.get("g1", "alice").is_some());
    }

    #[tokio::test]
    async fn dropping_a_detached_primary_stream_does_not_cancel() {
        let r = Registry::default();
        let g = r.start("g1".into(), "alice".into(), "c1".into(), true);
        let mut s = Box::pin(g.primary());
        g.publish(ChatEvent::default());
        assert_eq!(s.next().await.unwrap().sequence, 1);
        drop(s);
        assert!(!g.cancel.is_cancelled());
    }

    #[test]
    fn detached_slots_are_bounded_per_owner_and_given_back() {
        let r = Registry::new(2);
        let a = r.try_detach("alice").unwrap();
        let b = r.try_detach("alice").unwrap();
        assert!(r.try_detach("alice").is_none());
        assert!(r.try_detach("bob").is_some(), "other owners have their own");
        assert_eq!(r.detached("alice"), 2);
        drop(a);
        let c = r.try_detach("alice").unwrap();
        drop((b, c));
        assert_eq!(r.detached("alice"), 0);
        assert!(r.inner.lock().detached.is_empty(), "no entry left behind");
    }

    #[test]
    fn finished_generations_are_kept_for_their_time_then_dropped() {
        let r = Registry::default();
        let g = r.start("g1".into(), "alice".into(), "c1".into(), true);
        r.finish(&g);
        r.expire();
        assert!(r.get("g1", "alice").is_some(), "kept for re-attach");
        assert_eq!(r.running(), 0);

        // Past its time (zero here), `expire` drops it without any other activity.
        let r = Registry::with_ttl(3, Duration::ZERO);
        let g = r.start("g1".into(), "alice".into(), "c1".into(), true);
        let running = r.start("g2".into(), "alice".into(), "c1".into(), true);
        assert_eq!(r.len(), 2);
        g.finish();
        r.inner
            .lock()
            .finished
            .push_back((Instant::now(), "g1".into()));
        r.expire();
        assert!(r.get("g1", "alice").is_none());
        assert!(r.get("g2", "alice").is_some(), "running ones stay");
        r.finish(&running);
        assert!(r.is_empty());
    }
}
