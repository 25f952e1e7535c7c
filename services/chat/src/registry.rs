//! Running and recently finished generations: their events (bounded) for Attach, and a
//! cancellation token for StopGeneration and for the client going away.
//!
//! A *detached* generation (`detach_on_disconnect`) is not cancelled when its client
//! goes away; each owner may run at most `max_detached` of them at once (a slot is taken
//! before any work and given back when the generation ends). Finished generations stay
//! for re-attach for [`FINISHED_TTL`] (at most [`MAX_FINISHED`]) and are then dropped,
//! also when nobody ever re-attaches.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use confab_proto::chat::v1::ChatEvent;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Events buffered per generation; older ones are dropped (the stored message has them).
pub const MAX_EVENTS_PER_GENERATION: usize = 8192;
/// Finished generations kept for re-attach.
pub const MAX_FINISHED: usize = 1024;
pub const FINISHED_TTL: Duration = Duration::from_secs(600);

pub struct Generation {
    pub id: String,
    pub owner: String,
    pub conversation_id: String,
    pub cancel: CancellationToken,
    /// The client going away does not cancel it.
    pub detached: bool,
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
    /// Publishes an event, assigning its sequence number.
    pub fn publish(&self, mut event: ChatEvent) -> u64 {
        let seq = {
            let mut inner = self.inner.lock();
            inner.next_seq += 1;
            event.sequence = inner.next_seq;
            event.generation_id.clone_from(&self.id);
            event.conversation_id.clone_from(&self.conversation_id);
            if inner.events.len() == MAX_EVENTS_PER_GENERATION {
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

    /// Oldest sequence number still buffered (1 when nothing was dropped).
    pub fn first_buffered(&self) -> u64 {
        let inner = self.inner.lock();
        inner
            .events
            .front()
            .map_or(inner.next_seq + 1, |e| e.sequence)
    }

    fn events_after(&self, after: u64) -> (Vec<ChatEvent>, bool) {
        let inner = self.inner.lock();
        // Sequences are contiguous: skip straight to the first one after `after`.
        let first = inner.events.front().map_or(1, |e| e.sequence);
        let skip = (after.saturating_add(1).saturating_sub(first)) as usize;
        let out = inner.events.iter().skip(skip).cloned().collect();
        (out, inner.finished)
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
                let (events, finished) = sub.generation.events_after(sub.last);
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

pub struct Registry {
    inner: Mutex<RegistryInner>,
    max_detached: usize,
    ttl: Duration,
}

impl Default for Registry {
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

/// One of an owner's detached-generation slots; given back when dropped.
pub struct DetachedSlot {
    registry: Arc<Registry>,
    owner: String,
}

impl Drop for DetachedSlot {
    fn drop(&mut self) {
        let mut inner = self.registry.inner.lock();
        if let Some(n) = inner.detached.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                inner.detached.remove(&self.owner);
            }
        }
    }
}

impl Registry {
    /// At most `max_detached` detached generations per owner at once.
    pub fn new(max_detached: usize) -> Self {
        Self::with_ttl(max_detached, FINISHED_TTL)
    }

    /// Keeping finished generations for `ttl` instead of [`FINISHED_TTL`].
    pub fn with_ttl(max_detached: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            max_detached,
            ttl,
        }
    }

    /// How long a finished generation stays for re-attach.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes one of `owner`'s detached slots; `None` when all are in use.
    pub fn try_detach(self: &Arc<Self>, owner: &str) -> Option<DetachedSlot> {
        let mut inner = self.inner.lock();
        let n = inner.detached.entry(owner.to_owned()).or_default();
        if *n >= self.max_detached {
            if *n == 0 {
                inner.detached.remove(owner);
            }
            return None;
        }
        *n += 1;
        Some(DetachedSlot {
            registry: self.clone(),
            owner: owner.to_owned(),
        })
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
        let g = Arc::new(Generation {
            id: id.clone(),
            owner,
            conversation_id,
            detached,
            cancel: CancellationToken::new(),
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next_seq: 0,
                finished: false,
            }),
            seq_tx: watch::channel(0).0,
        });
        let mut inner = self.inner.lock();
        self.prune(&mut inner);
        inner.by_id.insert(id, g.clone());
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
        let now = Instant::now();
        while inner.finished.len() > MAX_FINISHED
            || inner
                .finished
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= self.ttl)
        {
            if let Some((_, id)) = inner.finished.pop_front() {
                inner.by_id.remove(&id);
            }
        }
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
        self.inner
            .lock()
            .by_id
            .get(id)
            .filter(|g| g.owner == owner)
            .cloned()
    }

    pub fn running(&self) -> usize {
        self.inner
            .lock()
            .by_id
            .values()
            .filter(|g| !g.is_finished())
            .count()
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
        let r = Arc::new(Registry::new(2));
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
