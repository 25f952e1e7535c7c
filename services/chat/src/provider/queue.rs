//! One fair queue in front of a CPU model: at most `slots` generations run at once, and
//! the rest wait in round-robin order across users (a request waits behind those of users
//! with fewer requests running or waiting ahead of it, then by arrival), so one user with
//! many tabs cannot starve the others.
//! A waiter sees its position change; dropping it (Stop while queued) leaves the queue.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{waiting} requests are already waiting for the embedded model (the limit is {limit})")]
pub struct QueueFull {
    pub waiting: usize,
    pub limit: usize,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    user: String,
}

#[derive(Debug)]
struct State {
    /// Per slot: the user running on it, `None` when free.
    slots: Vec<Option<String>>,
    waiting: Vec<Waiter>,
    next_ticket: u64,
}

impl State {
    /// Waiting tickets in service order: by how many of the same user's requests run or
    /// wait ahead of it (round-robin across users), then by arrival.
    fn order(&self) -> Vec<u64> {
        let mut keyed: Vec<(usize, u64)> = Vec::with_capacity(self.waiting.len());
        for (i, w) in self.waiting.iter().enumerate() {
            let running = self
                .slots
                .iter()
                .filter(|s| s.as_deref() == Some(w.user.as_str()))
                .count();
            let same_user_before = self.waiting[..i]
                .iter()
                .filter(|o| o.user == w.user)
                .count();
            keyed.push((running + same_user_before, w.ticket));
        }
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, t)| t).collect()
    }

    fn free_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_none()).count()
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Bumped on every change, so waiters recompute their position.
    changed: watch::Sender<u64>,
    max_waiting: usize,
}

impl Shared {
    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Cheap to clone; all clones share one queue.
#[derive(Debug, Clone)]
pub struct ModelQueue {
    shared: Arc<Shared>,
}

/// A running slot; dropping it frees the slot for the next waiter.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    slot: usize,
}

impl Permit {
    pub fn slot(&self) -> usize {
        self.slot
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.state.lock().slots[self.slot] = None;
        self.shared.bump();
    }
}

/// A place in the queue; dropping it before it is served gives the place up.
#[derive(Debug)]
pub struct Ticket {
    shared: Arc<Shared>,
    ticket: u64,
    rx: watch::Receiver<u64>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        let before = st.waiting.len();
        st.waiting.retain(|w| w.ticket != self.ticket);
        let left = st.waiting.len() != before;
        drop(st);
        if left {
            self.shared.bump();
        }
    }
}

impl ModelQueue {
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        let (changed, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots: vec![None; slots.max(1)],
                    waiting: Vec::new(),
                    next_ticket: 0,
                }),
                changed,
                max_waiting,
            }),
        }
    }

    pub fn slots(&self) -> usize {
        self.shared.state.lock().slots.len()
    }

    /// Joins the queue for `user`; refused when `max_waiting` requests already wait.
    pub fn join(&self, user: &str) -> Result<Ticket, QueueFull> {
        let mut st = self.shared.state.lock();
        if st.waiting.len() >= self.shared.max_waiting {
            return Err(QueueFull {
                waiting: st.waiting.len(),
                limit: self.shared.max_waiting,
            });
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiting.push(Waiter {
            ticket,
            user: user.to_owned(),
        });
        drop(st);
        let rx = self.shared.changed.subscribe();
        self.shared.bump();
        Ok(Ticket {
            shared: self.shared.clone(),
            ticket,
            rx,
        })
    }
}

impl Ticket {
    /// How many requests will be served before this one (0: next, or a slot is free).
    pub fn ahead(&self) -> usize {
        let st = self.shared.state.lock();
        let pos = st
            .order()
            .iter()
            .position(|t| *t == self.ticket)
            .unwrap_or(0);
        pos.saturating_sub(st.free_count())
    }

    /// Waits for a slot, calling `on_position` with the number ahead whenever it changes.
    /// `score` ranks free slots (e.g. by how much of this prompt a slot has cached); the
    /// highest wins. Cancel by dropping the future.
    pub async fn wait(
        mut self,
        mut on_position: impl FnMut(usize),
        score: impl Fn(usize) -> usize,
    ) -> Permit {
        let mut last = None;
        loop {
            self.rx.mark_unchanged();
            {
                let mut st = self.shared.state.lock();
                let order = st.order();
                let pos = order.iter().position(|t| *t == self.ticket).unwrap_or(0);
                let free = st.free_count();
                if pos < free {
                    let slot = (0..st.slots.len())
                        .filter(|s| st.slots[*s].is_none())
                        .max_by_key(|s| (score(*s), std::cmp::Reverse(*s)))
                        .expect("a free slot");
                    let me = st.waiting.iter().position(|w| w.ticket == self.ticket);
                    let user = me.map(|i| st.waiting.remove(i).user).unwrap_or_default();
                    st.slots[slot] = Some(user);
                    drop(st);
                    self.shared.bump();
                    let shared = self.shared.clone();
                    // Already out of the queue: the ticket's drop has nothing to remove.
                    drop(self);
                    return Permit { shared, slot };
                }
                let ahead = pos - free;
                if last != Some(ahead) {
                    last = Some(ahead);
                    drop(st);
                    on_position(ahead);
                }
            }
            if self.rx.changed().await.is_err() {
                // The sender lives in `shared`, which this ticket holds: cannot happen.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn take(q: &ModelQueue, user: &str) -> Permit {
        q.join(user).unwrap().wait(|_| {}, |_| 0).await
    }

    #[tokio::test]
    async fn runs_at_most_slots_at_once_and_frees_on_drop() {
        let q = ModelQueue::new(2, 8);
        let a = take(&q, "a").await;
        let b = take(&q, "b").await;
        assert_ne!(a.slot(), b.slot());
        let t = q.join("c").unwrap();
        assert_eq!(t.ahead(), 0);
        let waiting = tokio::spawn(t.wait(|_| {}, |_| 0));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        let freed = a.slot();
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.slot(), freed);
    }

    #[tokio::test]
    async fn round_robin_across_users_and_positions() {
        let q = ModelQueue::new(1, 8);
        let running = take(&q, "x").await;
        let a1 = q.join("alice").unwrap();
        let a2 = q.join("alice").unwrap();
        let b1 = q.join("bob").unwrap();
        // Bob's first request goes before Alice's second.
        assert_eq!((a1.ahead(), b1.ahead(), a2.ahead()), (0, 1, 2));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tx2 = tx.clone();
        let a2 = tokio::spawn(a2.wait(move |n| tx2.send(("a2", n)).unwrap(), |_| 0));
        let b1 = tokio::spawn(b1.wait(move |n| tx.send(("b1", n)).unwrap(), |_| 0));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Alice leaves her first place (Stop while queued): her second is now her first
        // and arrived before Bob's.
        drop(a1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut seen = vec![];
        while let Ok(e) = rx.try_recv() {
            seen.push(e);
        }
        assert_eq!(seen, [("a2", 2), ("b1", 1), ("a2", 0)]);
        drop(running);
        let a = tokio::time::timeout(Duration::from_secs(1), a2)
            .await
            .unwrap()
            .unwrap();
        assert!(!b1.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), b1)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_user_with_an_answer_running_waits_behind_the_others() {
        let q = ModelQueue::new(1, 8);
        let _alice_running = take(&q, "alice").await;
        let alice = q.join("alice").unwrap();
        let bob = q.join("bob").unwrap();
        assert_eq!((bob.ahead(), alice.ahead()), (0, 1));
    }

    #[tokio::test]
    async fn refuses_past_the_waiting_limit_and_prefers_the_best_slot() {
        let q = ModelQueue::new(3, 1);
        let _t = q.join("a").unwrap();
        assert_eq!(
            q.join("b").unwrap_err(),
            QueueFull {
                waiting: 1,
                limit: 1
            }
        );
        drop(_t);
        let p = q.join("a").unwrap().wait(|_| {}, |s| [5, 9, 1][s]).await;
        assert_eq!(p.slot(), 1);
    }
}
