//! Running and recently finished generations: their events (bounded) for Attach, and a
//! cancellation token for StopGeneration and for the client going away.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    by_id: HashMap<String, Arc<Generation>>,
    finished: VecDeque<(Instant, String)>,
}

impl Registry {
    pub fn start(&self, id: String, owner: String, conversation_id: String) -> Arc<Generation> {
        let g = Arc::new(Generation {
            id: id.clone(),
            owner,
            conversation_id,
            cancel: CancellationToken::new(),
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next_seq: 0,
                finished: false,
            }),
            seq_tx: watch::channel(0).0,
        });
        self.inner.lock().by_id.insert(id, g.clone());
        g
    }

    /// Finishes `g` and keeps it for re-attach within the bounds.
    pub fn finish(&self, g: &Generation) {
        g.finish();
        let mut inner = self.inner.lock();
        let now = Instant::now();
        inner.finished.push_back((now, g.id.clone()));
        while inner.finished.len() > MAX_FINISHED
            || inner
                .finished
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > FINISHED_TTL)
        {
            if let Some((_, id)) = inner.finished.pop_front() {
                inner.by_id.remove(&id);
            }
        }
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
        let g = r.start("g1".into(), "alice".into(), "c1".into());
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
        let g = r.start("g1".into(), "alice".into(), "c1".into());
        let s = g.subscribe(0, true);
        drop(s);
        assert!(g.cancel.is_cancelled());
        assert!(r.get("g1", "bob").is_none());
        assert!(r.get("g1", "alice").is_some());
    }
}
